{# One row per combination of the columns (null counts as a value, as in an invoice key). #}
{% test unique_key(model, columns) %}
  select {{ columns | join(', ') }}, count(*) as copies
  from {{ model }}
  group by {{ columns | join(', ') }}
  having count(*) > 1
{% endtest %}

{# Fails (or warns, with severity warn) when the model has any row. #}
{% test no_rows(model) %}
  select * from {{ model }}
{% endtest %}
