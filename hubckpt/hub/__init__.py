"""The client side's one home for talking to a hub (DESIGN.md §5).

- `select`: which hub (`resolve_hub`, `Hub`, tokens per hub) and the one place that builds `HfApi` clients;
- `local`: the local hub's lifecycle in the background: start, discover (`server.json`), stop;
- `origin`: which URLs may receive a hub's credentials (its own origin only);
- `reader`: `HubReader`, the one reader, shared by the publisher and the consumer side;
- `writer`: `HubTarget`, the publisher's writes (one commit per revision, compare-and-swap on `main`, tags);
- `commits`: a folder as exactly one commit, over the protocol the hub speaks (LFS or Xet);
- `budget`: a repo's commit budget as the hub's answers tell it, and a pacer that spaces commits under it;
- `retries`: per-request timeouts and retries of transient failures, for reader and writer alike;
- `patches`: the few settings of other libraries that have no public hook, each with why, in one place.

Dependencies run one way: nothing here imports `publishing`, `load`, `integrations`, `cli` or `server`.
"""
