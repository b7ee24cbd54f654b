{{ config(materialized='view') }}  {# reads the ledger: always as issued, even right after a close #}
-- Invoice lines the rate card has no price for: to be priced before the invoice is issued.
select vendor, account_id, customer_id, unit, invoice_month, quantity
from {{ ref('invoice_amounts') }}
where not priced
