{{ config(materialized='view') }}  {# reads the ledger: always as issued, even right after a close #}
-- One row per (vendor, account_id, customer_id, unit, invoice_month): the quantity to invoice.
-- A closed month shows what was issued for it (the ledger), never a later recomputation: later
-- data for it goes to invoice_adjustments. An open month shows the current figure.
-- issued_unit_price/issued_currency: the price an issued line was issued at (invoice_amounts).
with closed_months as (
    select invoice_month from {{ ledger_relation() }} where kind = 'close'
),

issued as (
    select
        vendor, account_id, customer_id, unit, invoice_month, quantity, 'issued' as status,
        unit_price as issued_unit_price, currency as issued_currency
    from {{ ledger_relation() }}
    where kind = 'line'
),

open_lines as (
    select
        vendor, account_id, customer_id, unit, invoice_month, quantity, 'open' as status,
        cast(null as decimal(18, 6)) as issued_unit_price, cast(null as varchar) as issued_currency
    from {{ ref('invoice_lines_current') }}
    where invoice_month not in (select invoice_month from closed_months)
)

select * from issued
union all
select * from open_lines
