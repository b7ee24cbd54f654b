{{ config(materialized='view') }}  {# reads the ledger #}
-- Adjustments priced, to invoice with bill_month: billed ones (recorded by a close, at the price
-- they were billed at) and pending ones (invoice_adjustments, at the rate card's rate for the
-- month they correct).
with pending as (
    select
        vendor, account_id, customer_id, unit, invoice_month, bill_month, quantity_difference,
        'pending' as status
    from {{ ref('invoice_adjustments') }}
),

pending_rated as (
    {{ with_rate('pending', ['vendor', 'account_id', 'customer_id', 'unit', 'invoice_month']) }}
),

adjustments as (
    select
        vendor, account_id, customer_id, unit, invoice_month, billed_in_month as bill_month,
        quantity as quantity_difference, 'billed' as status, unit_price, currency
    from {{ ledger_relation() }}
    where kind = 'adjustment'
    union all
    select
        vendor, account_id, customer_id, unit, invoice_month, bill_month, quantity_difference,
        status, rate_unit_price as unit_price, rate_currency as currency
    from pending_rated
)

select
    vendor, account_id, customer_id, unit, invoice_month, bill_month, quantity_difference, status,
    unit_price, currency,
    quantity_difference * unit_price as amount,
    unit_price is not null as priced
from adjustments
