-- One row per (bot or ALL, UTC period start, unit) of the Kore.ai Billing Usage Summary; the newest
-- landed figure wins (a rerun refreshes a period whose figure grew).
{% if landed_table_exists('billing_usage_summary') %}
with landed as (
    select
        bot,
        {{ utc_timestamp('period_start') }} as period_start,
        {{ utc_timestamp('period_end') }} as period_end,
        granularity,
        unit,
        cast("value" as bigint) as vendor_value,
        row_number() over (
            partition by bot, period_start, unit
            order by {{ newest_first(source('landed', 'billing_usage_summary')) }}
        ) as copy_number
    from {{ source('landed', 'billing_usage_summary') }}
)

select bot, period_start, period_end, granularity, unit, vendor_value
from landed
where copy_number = 1
{% else %}
select
    cast(null as varchar) as bot,
    cast(null as timestamp) as period_start,
    cast(null as timestamp) as period_end,
    cast(null as varchar) as granularity,
    cast(null as varchar) as unit,
    cast(null as bigint) as vendor_value
where 1 = 0
{% endif %}
