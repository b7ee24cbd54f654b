-- Units per vendor: Kore.ai billing sessions, Evo Voice AI minutes, Lumin.ai event types (billing.*).
select vendor, unit
from {{ ref('invoice_lines_current') }}
where not (
    (vendor = 'kore' and unit = 'billing_session')
    or (vendor = 'evovoice' and unit = 'ai_minute')
    or (vendor = 'luminai' and unit like 'billing.%')
)
