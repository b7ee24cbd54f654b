"""tap-luminai: billable events from the Lumin.ai Billing API."""
