-- One row per Evo Voice customer and period of GetBilling (UTC days, end inclusive); newest wins.
{% if landed_table_exists('billing_customers') %}
with landed as (
    select
        "accountId" as account_id,
        "customerId" as customer_id,
        cast("startDate" as date) as start_date,
        cast("endDate" as date) as end_date,
        cast("internationalCosts" as decimal(18, 6)) as international_costs,
        "hasCallRecording" as has_call_recording,
        row_number() over (
            partition by "accountId", "customerId", "startDate"
            order by {{ newest_first(source('landed', 'billing_customers')) }}
        ) as copy_number
    from {{ source('landed', 'billing_customers') }}
)

select account_id, customer_id, start_date, end_date, international_costs, has_call_recording
from landed
where copy_number = 1
{% else %}
select
    cast(null as varchar) as account_id,
    cast(null as varchar) as customer_id,
    cast(null as date) as start_date,
    cast(null as date) as end_date,
    cast(null as decimal(18, 6)) as international_costs,
    cast(null as boolean) as has_call_recording
where 1 = 0
{% endif %}
