-- The messages API filters by exact sender or recipient. Without these a rare number meant walking the
-- tenant's whole ordered index (p99 154 ms on 500,000 messages, bench.queries); with them the filtered list
-- is a range scan in the same (receivedAt, messageId) order as the unfiltered one.
CREATE INDEX messages_by_sender ON messages (tenant_id, from_number, received_at DESC, message_id DESC);
CREATE INDEX messages_by_recipient ON messages (tenant_id, to_number, received_at DESC, message_id DESC);
-- The same for direction: every stored message is inbound today, so ?direction=outbound walked them all
-- (p50 137 ms on 500,000 messages) to find none.
CREATE INDEX messages_by_direction ON messages (tenant_id, direction, received_at DESC, message_id DESC);
