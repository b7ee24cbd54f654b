-- Kore.ai: the billing sessions we landed against the vendor's own count, per bot and UTC day
-- (the Billing Usage Summary's buckets are UTC). Daily and hourly figures are summed to days;
-- monthly figures cannot be split into days and are left out. A vendor row for ALL (the Admin
-- scope without bot_ids) is held against the sessions of every bot. Only days the vendor's figures
-- cover are compared: from the first to the last day each bot (or ALL) has figures for.
with vendor as (
    select
        bot as bot_id,
        cast(period_start as date) as day,
        sum(vendor_value) as vendor_sessions
    from {{ ref('stg_kore__billing_usage_summary') }}
    where unit = 'sessions' and granularity in ('day', 'hour')
    group by bot, cast(period_start as date)
),

coverage as (
    select bot_id, min(day) as first_day, max(day) as last_day
    from vendor
    group by bot_id
),

landed_per_bot as (
    select bot_id, cast(billing_start_at as date) as day, count(*) as landed_sessions
    from {{ ref('stg_kore__billing_sessions') }}
    group by bot_id, cast(billing_start_at as date)
),

landed as (
    select bot_id, day, landed_sessions from landed_per_bot
    union all
    select 'ALL' as bot_id, day, sum(landed_sessions) as landed_sessions
    from landed_per_bot
    group by day
),

compared as (
    select
        coalesce(v.bot_id, l.bot_id) as bot_id,
        coalesce(v.day, l.day) as day,
        coalesce(l.landed_sessions, 0) as landed_sessions,
        coalesce(v.vendor_sessions, 0) as vendor_sessions
    from vendor as v
    full outer join landed as l on v.bot_id = l.bot_id and v.day = l.day
)

select
    c.bot_id,
    c.day,
    cast(c.landed_sessions as bigint) as landed_sessions,
    cast(c.vendor_sessions as bigint) as vendor_sessions,
    cast(c.landed_sessions - c.vendor_sessions as bigint) as difference
from compared as c
inner join coverage as k
    on c.bot_id = k.bot_id and c.day between k.first_day and k.last_day
