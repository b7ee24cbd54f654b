{# dbt run-operation export_invoice_csv --args '{directory: /abs/path}' (DuckDB): writes the priced
   invoice lines (invoice-lines.csv), the rows landed per stream (landed-rows.csv) and the Kore.ai
   reconciliation (kore-reconciliation.csv), for `make demo`'s summary and picture. #}
{% macro export_invoice_csv(directory) %}
  {%- if target.type != 'duckdb' -%}
    {{ exceptions.raise_compiler_error("export_invoice_csv writes files from DuckDB; on " ~ target.type ~ " query invoice_amounts instead") }}
  {%- endif -%}
  {%- set folder = directory | string -%}
  {%- if "'" in folder -%}{{ exceptions.raise_compiler_error("export_invoice_csv: directory must not contain a quote") }}{%- endif -%}
  {%- set export -%}
    copy (
      select vendor, account_id, customer_id, unit, invoice_month, quantity, status, unit_price,
        currency, amount, priced
      from {{ ref('invoice_amounts') }}
      order by vendor, invoice_month, account_id, customer_id, unit
    ) to '{{ folder }}/invoice-lines.csv' (header, delimiter ',');
    {%- set tables = ['billing_events', 'billing_sessions', 'ai_account_usage', 'ai_customer_usage'] -%}
    {%- for optional in ['billing_usage_summary', 'llm_usage_logs', 'billing_customers'] -%}
      {%- if landed_table_exists(optional) -%}{%- do tables.append(optional) -%}{%- endif -%}
    {%- endfor %}
    copy (
      {%- for table in tables %}
      select '{{ table }}' as stream, count(*) as landed_rows from {{ source('landed', table) }}
      {%- if not loop.last %} union all{% endif %}
      {%- endfor %}
    ) to '{{ folder }}/landed-rows.csv' (header, delimiter ',');
    copy (
      select bot_id, day, landed_sessions, vendor_sessions, difference
      from {{ ref('kore_reconciliation') }}
      order by bot_id, day
    ) to '{{ folder }}/kore-reconciliation.csv' (header, delimiter ',');
  {%- endset -%}
  {%- do run_query(export) -%}
  {{ log("export_invoice_csv: wrote " ~ folder ~ "/invoice-lines.csv, landed-rows.csv and kore-reconciliation.csv", info=true) }}
{% endmacro %}
