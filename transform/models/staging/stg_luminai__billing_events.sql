-- One row per Lumin.ai event id, whatever the target kept; UTC timestamps.
with landed as (
    select
        id as event_id,
        conversation_id,
        {{ utc_timestamp('"timestamp"') }} as event_at,
        type as event_type,
        host_id,
        host_did,
        user_did,
        fake,
        row_number() over (
            partition by id order by {{ newest_first(source('landed', 'billing_events')) }}
        ) as copy_number
    from {{ source('landed', 'billing_events') }}
)

select event_id, conversation_id, event_at, event_type, host_id, host_did, user_did, fake
from landed
where copy_number = 1
