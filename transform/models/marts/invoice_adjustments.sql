{{ config(materialized='view') }}  {# reads the ledger: always as issued, even right after a close #}
-- Later data for a closed month: the difference between what its lines amount to now and what was
-- issued for them (lines and adjustments billed since), to bill with the next invoice. An issued
-- line is never edited: a difference shows here until a close bills it.
with closed_months as (
    select invoice_month, max(billed_in_month) as closed_in from {{ ledger_relation() }}
    where kind = 'close'
    group by invoice_month
),

issued as (
    select vendor, account_id, customer_id, unit, invoice_month, sum(quantity) as quantity
    from {{ ledger_relation() }}
    where kind in ('line', 'adjustment')
    group by vendor, account_id, customer_id, unit, invoice_month
),

current_lines as (
    select lines.vendor, lines.account_id, lines.customer_id, lines.unit, lines.invoice_month, lines.quantity
    from {{ ref('invoice_lines_current') }} as lines
    inner join closed_months on closed_months.invoice_month = lines.invoice_month
),

compared as (
    select
        coalesce(c.vendor, i.vendor) as vendor,
        coalesce(c.account_id, i.account_id) as account_id,
        coalesce(c.customer_id, i.customer_id) as customer_id,
        coalesce(c.unit, i.unit) as unit,
        coalesce(c.invoice_month, i.invoice_month) as invoice_month,
        coalesce(i.quantity, 0) as quantity_issued,
        coalesce(c.quantity, 0) as quantity_now
    from current_lines as c
    full outer join issued as i
        on c.vendor = i.vendor
        and c.unit = i.unit
        and c.invoice_month = i.invoice_month
        and (c.account_id = i.account_id or (c.account_id is null and i.account_id is null))
        and (c.customer_id = i.customer_id or (c.customer_id is null and i.customer_id is null))
)

select
    vendor,
    account_id,
    customer_id,
    unit,
    invoice_month,
    quantity_issued,
    quantity_now,
    quantity_now - quantity_issued as quantity_difference,
    (select cast({{ dbt.dateadd('month', 1, 'max(invoice_month)') }} as date) from closed_months) as bill_month
from compared
where quantity_now <> quantity_issued
