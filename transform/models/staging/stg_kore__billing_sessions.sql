-- One row per Kore.ai billing session id, whatever the target kept; UTC timestamps.
with landed as (
    select
        "billingSessionId" as billing_session_id,
        "botId" as bot_id,
        channel,
        "billingSessionType" as billing_session_type,
        "conversationSessionId" as conversation_session_id,
        "koreUserId" as kore_user_id,
        "channelUserId" as channel_user_id,
        {{ utc_timestamp('"billingSessionStartDateTime"') }} as billing_start_at,
        {{ utc_timestamp('"billingSessionEndDateTime"') }} as billing_end_at,
        {{ utc_timestamp('"conversationSessionStartDateTime"') }} as conversation_start_at,
        {{ utc_timestamp('"conversationSessionEndDateTime"') }} as conversation_end_at,
        row_number() over (
            partition by "billingSessionId"
            order by {{ newest_first(source('landed', 'billing_sessions')) }}
        ) as copy_number
    from {{ source('landed', 'billing_sessions') }}
)

select
    billing_session_id, bot_id, channel, billing_session_type, conversation_session_id,
    kore_user_id, channel_user_id, billing_start_at, billing_end_at, conversation_start_at,
    conversation_end_at
from landed
where copy_number = 1
