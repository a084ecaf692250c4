-- Which process is a node now. Each `tally serve` started with a `TALLY_NODE_ID` registers
-- under a fresh random incarnation, and its later heartbeats renew the row only while it still
-- names that incarnation. So when a second process is started under the same node id (a
-- configuration mistake, or an operator starting a node again without stopping the first),
-- the first one's next heartbeat finds the row taken and that process exits, instead of the two
-- taking each other's leases back and forth. A node restarted after `kill -9` registers anew
-- and takes the row over, as it takes its leases over.
ALTER TABLE cluster_nodes ADD COLUMN incarnation UUID;
