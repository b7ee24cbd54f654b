"""tap-evovoice: AI-minutes usage per account and per customer from Evo Voice GetAIUsage."""
