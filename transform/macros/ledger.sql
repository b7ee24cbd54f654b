{# The invoice ledger: what was issued, append-only. `close_month` writes it; the models read it.
   kind 'line': a line issued for its month; 'adjustment': a difference for an earlier closed
   month, billed with `billed_in_month`; 'close': the marker of a closed month. Each line and
   adjustment keeps the price it was issued at: a later rate card does not reprice it. #}

{% macro ledger_relation() %}
  {{ return(api.Relation.create(database=target.database, schema=target.schema ~ '_ledger', identifier='invoice_issues')) }}
{% endmacro %}

{% macro create_invoice_ledger() %}
  {%- set ledger = ledger_relation() -%}
  create schema if not exists {{ ledger.include(database=false, identifier=false) }};
  create table if not exists {{ ledger }} (
    vendor varchar(32) not null,
    account_id varchar(512),
    customer_id varchar(512),
    unit varchar(256),
    invoice_month date not null,
    quantity bigint not null,
    unit_price decimal(18, 6),
    currency varchar(16),
    kind varchar(16) not null,
    billed_in_month date not null,
    issued_at timestamp not null
  )
{% endmacro %}

{# dbt run-operation close_month --args '{month: 2024-05}': issue month M's invoice. Records the
   current invoice lines of M, and the pending adjustments of earlier closed months (billed with M),
   with their prices, in the ledger, in one transaction. From then on `invoice_lines` shows M as issued, and later data for M appears in
   `invoice_adjustments`. Build the models first (`make close-month` does). #}
{% macro close_month(month) %}
  {%- set text = month | string -%}
  {%- if not modules.re.fullmatch('[0-9]{4}-(0[1-9]|1[0-2])', text) -%}
    {{ exceptions.raise_compiler_error("close_month: month must be YYYY-MM, got '" ~ text ~ "'") }}
  {%- endif -%}
  {%- set first_day = text ~ '-01' -%}
  {%- set ledger = ledger_relation() -%}
  {%- do run_query(create_invoice_ledger()) -%}
  {%- set closed = run_query("select count(*) from " ~ ledger ~ " where kind = 'close' and invoice_month = cast('" ~ first_day ~ "' as date)") -%}
  {%- if closed.columns[0].values()[0] > 0 -%}
    {{ exceptions.raise_compiler_error("close_month: " ~ text ~ " is closed already; its later data goes to invoice_adjustments") }}
  {%- endif -%}
  {%- set insert -%}
    {% if target.type != 'postgres' %}begin transaction;{% endif %}
    insert into {{ ledger }} (vendor, account_id, customer_id, unit, invoice_month, quantity, unit_price, currency, kind, billed_in_month, issued_at)
    select vendor, account_id, customer_id, unit, invoice_month, quantity, unit_price, currency, 'line', invoice_month, current_timestamp
    from {{ ref('invoice_amounts') }}
    where invoice_month = cast('{{ first_day }}' as date) and status = 'open';
    insert into {{ ledger }} (vendor, account_id, customer_id, unit, invoice_month, quantity, unit_price, currency, kind, billed_in_month, issued_at)
    select vendor, account_id, customer_id, unit, invoice_month, quantity_difference, unit_price, currency, 'adjustment', cast('{{ first_day }}' as date), current_timestamp
    from {{ ref('invoice_adjustment_amounts') }}
    where status = 'pending' and invoice_month < cast('{{ first_day }}' as date);
    insert into {{ ledger }} (vendor, account_id, customer_id, unit, invoice_month, quantity, unit_price, currency, kind, billed_in_month, issued_at)
    values ('-', null, null, null, cast('{{ first_day }}' as date), 0, null, null, 'close', cast('{{ first_day }}' as date), current_timestamp);
    {% if target.type != 'postgres' %}commit;{% endif %}
  {%- endset -%}
  {%- do run_query(insert) -%}
  {%- if target.type == 'postgres' -%}{%- do run_query('commit') -%}{%- endif -%}
  {%- set issued = run_query("select kind, count(*), coalesce(sum(quantity), 0) from " ~ ledger ~ " where billed_in_month = cast('" ~ first_day ~ "' as date) group by kind order by kind") -%}
  {%- for row in issued.rows -%}
    {{ log("close_month " ~ text ~ ": " ~ row[0] ~ " rows " ~ row[1] ~ ", quantity " ~ row[2], info=true) }}
  {%- endfor -%}
{% endmacro %}
