"""tap-kore-billing: billing sessions from the Kore.ai Billing Sessions API."""
