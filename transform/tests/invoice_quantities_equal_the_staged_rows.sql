-- Every invoice line's quantity equals what the staged rows it sums give, counted again from
-- staging directly (a lost or doubled row between staging and the lines would make them differ).
-- It uses the same day and month rules: the time-zone rule itself is checked against the
-- sandbox's truth by tests/test_invoice_layer.py.
{% set real_only = var('luminai_real_only', false) %}
with recounted as (
    select 'luminai' as vendor, host_id as account_id, cast(null as varchar) as customer_id,
        event_type as unit, {{ month_start(invoice_day('event_at')) }} as invoice_month,
        count(*) as quantity
    from {{ ref('stg_luminai__billing_events') }}
    {% if real_only %}where fake = 'real'{% endif %}
    group by 1, 2, 3, 4, 5
    union all
    select 'kore', bot_id, channel, 'billing_session',
        {{ month_start(invoice_day('billing_start_at')) }}, count(*)
    from {{ ref('stg_kore__billing_sessions') }}
    group by 1, 2, 3, 4, 5
    union all
    select 'evovoice', account_id, customer_id, 'ai_minute', {{ month_start('start_date') }},
        sum(ai_minutes)
    from {{ ref('stg_evovoice__ai_customer_usage') }}
    group by 1, 2, 3, 4, 5
)

select coalesce(r.vendor, l.vendor) as vendor, r.quantity as recounted, l.quantity as invoiced
from recounted as r
full outer join {{ ref('invoice_lines_current') }} as l
    on l.vendor = r.vendor
    and l.unit = r.unit
    and l.invoice_month = r.invoice_month
    and (l.account_id = r.account_id or (l.account_id is null and r.account_id is null))
    and (l.customer_id = r.customer_id or (l.customer_id is null and r.customer_id is null))
where r.quantity is null or l.quantity is null or r.quantity <> l.quantity
