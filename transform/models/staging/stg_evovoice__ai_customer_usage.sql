-- One row per Evo Voice customer and period (UTC days, end inclusive); the newest figure wins.
with landed as (
    select
        "accountId" as account_id,
        "customerId" as customer_id,
        cast("startDate" as date) as start_date,
        cast("endDate" as date) as end_date,
        cast("aiMinutes" as bigint) as ai_minutes,
        row_number() over (
            partition by "accountId", "customerId", "startDate"
            order by {{ newest_first(source('landed', 'ai_customer_usage')) }}
        ) as copy_number
    from {{ source('landed', 'ai_customer_usage') }}
)

select account_id, customer_id, start_date, end_date, ai_minutes
from landed
where copy_number = 1
