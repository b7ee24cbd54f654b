-- One row per Kore.ai LLM call (id: the tap's documented hash of the call's identifying fields).
{% if landed_table_exists('llm_usage_logs') %}
with landed as (
    select
        id as call_id,
        bot_id,
        {{ utc_timestamp('start_date') }} as started_at,
        {{ utc_timestamp('end_date') }} as ended_at,
        model_name,
        feature_name,
        prompt_name,
        integration,
        channel_name,
        status,
        cast(status_code as bigint) as status_code,
        cast(request_tokens as bigint) as request_tokens,
        cast(response_tokens as bigint) as response_tokens,
        row_number() over (
            partition by id
            order by {{ newest_first(source('landed', 'llm_usage_logs')) }}
        ) as copy_number
    from {{ source('landed', 'llm_usage_logs') }}
)

select
    call_id, bot_id, started_at, ended_at, model_name, feature_name, prompt_name, integration,
    channel_name, status, status_code, request_tokens, response_tokens
from landed
where copy_number = 1
{% else %}
select
    cast(null as varchar) as call_id,
    cast(null as varchar) as bot_id,
    cast(null as timestamp) as started_at,
    cast(null as timestamp) as ended_at,
    cast(null as varchar) as model_name,
    cast(null as varchar) as feature_name,
    cast(null as varchar) as prompt_name,
    cast(null as varchar) as integration,
    cast(null as varchar) as channel_name,
    cast(null as varchar) as status,
    cast(null as bigint) as status_code,
    cast(null as bigint) as request_tokens,
    cast(null as bigint) as response_tokens
where 1 = 0
{% endif %}
