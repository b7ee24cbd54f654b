-- What each invoice line amounts to now, from the data landed so far, every month (closed or not).
select
    vendor,
    account_id,
    customer_id,
    unit,
    {{ month_start('usage_day') }} as invoice_month,
    sum(quantity) as quantity,
    sum(staged_rows) as staged_rows
from {{ ref('billable_usage') }}
group by vendor, account_id, customer_id, unit, {{ month_start('usage_day') }}
