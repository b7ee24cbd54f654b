{{ config(materialized='view') }}  {# reads the ledger: always as issued, even right after a close #}
-- invoice_lines priced. An issued line keeps the price it was issued at (the ledger); an open line
-- takes the rate card's rate for its month (the account's own rate first). A line without a rate
-- keeps a null amount and `priced = false` (see unpriced_invoice_lines), never a silent zero.
with lines as (
    select * from {{ ref('invoice_lines') }}
),

rated as (
    {{ with_rate('lines', ['vendor', 'account_id', 'customer_id', 'unit', 'invoice_month']) }}
),

priced as (
    select
        vendor, account_id, customer_id, unit, invoice_month, quantity, status,
        case when status = 'issued' then issued_unit_price else rate_unit_price end as unit_price,
        case when status = 'issued' then issued_currency else rate_currency end as currency
    from rated
)

select
    vendor, account_id, customer_id, unit, invoice_month, quantity, status, unit_price, currency,
    quantity * unit_price as amount,
    unit_price is not null as priced
from priced
