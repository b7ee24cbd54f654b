{# dbt run-operation export_invoice_csv --args '{directory: /abs/path}' (DuckDB): writes the priced
   invoice lines (invoice-lines.csv) and the rows landed per stream (landed-rows.csv), for
   `make demo`'s summary and picture. #}
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
    copy (
      {%- for table in ['billing_events', 'billing_sessions', 'ai_account_usage', 'ai_customer_usage'] %}
      select '{{ table }}' as stream, count(*) as landed_rows from {{ source('landed', table) }}
      {%- if not loop.last %} union all{% endif %}
      {%- endfor %}
    ) to '{{ folder }}/landed-rows.csv' (header, delimiter ',');
  {%- endset -%}
  {%- do run_query(export) -%}
  {{ log("export_invoice_csv: wrote " ~ folder ~ "/invoice-lines.csv and landed-rows.csv", info=true) }}
{% endmacro %}
