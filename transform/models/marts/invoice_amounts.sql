{{ config(materialized='view') }}  {# reads the ledger: always as issued, even right after a close #}
-- invoice_lines priced by the rate card (seed rate_card): the account's own rate where it has one,
-- else the vendor's rate for the unit, valid for the invoice month. A line without a rate keeps a
-- null amount and `priced = false` (see unpriced_invoice_lines), never a silent zero.
with rates as (
    select
        lines.vendor, lines.account_id, lines.customer_id, lines.unit, lines.invoice_month,
        rate.unit_price, rate.currency,
        row_number() over (
            partition by lines.vendor, lines.account_id, lines.customer_id, lines.unit, lines.invoice_month
            order by case when rate.account_id is null then 1 else 0 end, rate.valid_from desc
        ) as preference
    from {{ ref('invoice_lines') }} as lines
    inner join {{ ref('rate_card') }} as rate
        on rate.vendor = lines.vendor
        and rate.unit = lines.unit
        and (rate.account_id = lines.account_id or rate.account_id is null)
        and rate.valid_from <= lines.invoice_month
        and (rate.valid_to is null or lines.invoice_month <= rate.valid_to)
)

select
    lines.vendor,
    lines.account_id,
    lines.customer_id,
    lines.unit,
    lines.invoice_month,
    lines.quantity,
    lines.status,
    rates.unit_price,
    rates.currency,
    lines.quantity * rates.unit_price as amount,
    rates.unit_price is not null as priced
from {{ ref('invoice_lines') }} as lines
left join rates
    on rates.preference = 1
    and rates.vendor = lines.vendor
    and rates.unit = lines.unit
    and rates.invoice_month = lines.invoice_month
    and (rates.account_id = lines.account_id or (rates.account_id is null and lines.account_id is null))
    and (rates.customer_id = lines.customer_id or (rates.customer_id is null and lines.customer_id is null))
