{# The rows of `lines` (a CTE name) with the rate card's rate for each: the account's own rate
   before the vendor's, then the latest valid_from, valid for the row's invoice_month. Adds
   rate_unit_price and rate_currency (null where no rate applies: never a silent zero). `keys`:
   the columns that identify a row of `lines`. #}
{% macro with_rate(lines, keys) %}
select lines.*, chosen.unit_price as rate_unit_price, chosen.currency as rate_currency
from {{ lines }} as lines
left join (
    select
        {% for key in keys %}l.{{ key }} as key_{{ key }}, {% endfor %}
        r.unit_price,
        r.currency,
        row_number() over (
            partition by {% for key in keys %}l.{{ key }}{% if not loop.last %}, {% endif %}{% endfor %}
            order by case when r.account_id is null then 1 else 0 end, r.valid_from desc
        ) as preference
    from {{ lines }} as l
    inner join {{ ref('rate_card') }} as r
        on r.vendor = l.vendor
        and r.unit = l.unit
        and (r.account_id = l.account_id or r.account_id is null)
        and r.valid_from <= l.invoice_month
        and (r.valid_to is null or l.invoice_month <= r.valid_to)
) as chosen
    on chosen.preference = 1
    {% for key in keys %}
    and (chosen.key_{{ key }} = lines.{{ key }} or (chosen.key_{{ key }} is null and lines.{{ key }} is null))
    {% endfor %}
{% endmacro %}
