-- One row per vendor, account, customer, billable unit and day, all vendors in one shape.
-- Events (Lumin.ai, Kore.ai) fall on the day of the invoice time zone (invoice_timezone);
-- Evo Voice figures are whole UTC days (a period: its first day) and keep their UTC dates.
{% set real_only = var('luminai_real_only', false) %}

select
    'luminai' as vendor,
    host_id as account_id,
    cast(null as varchar) as customer_id,
    event_type as unit,
    {{ invoice_day('event_at') }} as usage_day,
    count(*) as quantity,
    count(*) as staged_rows
from {{ ref('stg_luminai__billing_events') }}
{% if real_only %}where fake = 'real'{% endif %}
group by host_id, event_type, {{ invoice_day('event_at') }}

union all

select
    'kore' as vendor,
    bot_id as account_id,
    channel as customer_id,
    'billing_session' as unit,
    {{ invoice_day('billing_start_at') }} as usage_day,
    count(*) as quantity,
    count(*) as staged_rows
from {{ ref('stg_kore__billing_sessions') }}
group by bot_id, channel, {{ invoice_day('billing_start_at') }}

union all

select
    'evovoice' as vendor,
    account_id,
    customer_id,
    'ai_minute' as unit,
    start_date as usage_day,
    sum(ai_minutes) as quantity,
    count(*) as staged_rows
from {{ ref('stg_evovoice__ai_customer_usage') }}
group by account_id, customer_id, start_date
