{# The reconciliation streams (billing_usage_summary, llm_usage_logs, billing_customers) are not
   selected by default: a project that never landed one has no such table. Their models then build
   empty, with the same columns, instead of failing the whole build. #}

{% macro landed_table_exists(name) %}
  {%- set relation = source('landed', name) -%}
  {%- if not execute -%}{{ return(true) }}{%- endif -%}
  {%- set found = adapter.get_relation(
      database=relation.database, schema=relation.schema, identifier=relation.identifier) -%}
  {{ return(found is not none) }}
{% endmacro %}
