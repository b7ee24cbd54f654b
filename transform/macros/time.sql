{# Time rules of the invoice layer. Timestamps land as UTC (the taps write ISO 8601 UTC); a target
   may keep them without a zone, so every session runs in UTC and a naive timestamp means UTC. #}

{% macro session_in_utc() %}
  {%- if target.type == 'postgres' -%} set time zone 'UTC'
  {%- else -%} set TimeZone = 'UTC'
  {%- endif -%}
{% endmacro %}

{# The invoice time zone: the var `invoice_timezone`, else BILLING_INVOICE_TIMEZONE, else UTC. #}
{% macro invoice_timezone() %}
  {%- set zone = var('invoice_timezone', env_var('BILLING_INVOICE_TIMEZONE', 'UTC')) -%}
  {%- if not zone or "'" in zone or ' ' in zone -%}
    {{ exceptions.raise_compiler_error("invoice_timezone must be an IANA time zone name such as Europe/Berlin, got '" ~ zone ~ "'") }}
  {%- endif -%}
  {{ return(zone) }}
{% endmacro %}

{# A landed timestamp as a UTC timestamp without zone. #}
{% macro utc_timestamp(column) -%}
  cast({{ column }} as timestamp)
{%- endmacro %}

{# The calendar day of a UTC timestamp in the invoice time zone. #}
{% macro invoice_day(utc_column) -%}
  cast((({{ utc_column }}) at time zone 'UTC') at time zone '{{ invoice_timezone() }}' as date)
{%- endmacro %}

{% macro month_start(day) -%}
  cast(date_trunc('month', {{ day }}) as date)
{%- endmacro %}

{# Rows of one key, newest landed first: targets that keep load metadata say which is newest
   (target-postgres: _sdc_batched_at); where there is none, the target has upserted by key. #}
{% macro newest_first(relation) -%}
  {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
  {%- if '_sdc_batched_at' in columns -%} _sdc_batched_at desc nulls last
  {%- else -%} 1
  {%- endif -%}
{%- endmacro %}
