-- Warns on every bot and day where the sessions we landed differ from the vendor's own count.
{{ config(severity='warn') }}
select bot_id, day, landed_sessions, vendor_sessions, difference
from {{ ref('kore_reconciliation') }}
where difference <> 0
