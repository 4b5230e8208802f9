"""Identity resolution: deterministic and probabilistic links between records, clusters, stable cdp_ids.

One concept per module. Deterministic links: ``deterministic`` (shared identifier values, guarded). Probabilistic
(Fellegi-Sunter) links, in the order data flows: ``blocking_rule`` (a rule's SQL parsed into join keys and filters)
-> ``blocking`` (candidate pairs) -> ``comparisons`` (one comparison's levels) and ``vectors`` (every comparison's
level for every pair, and their counts) -> ``training`` (u from random pairs, m and lambda by EM) -> ``model`` (the
fitted model: match weights, scoring, explanations, JSON) -> ``model_change`` (a retrain against the champion, on
the same pairs) and ``registry`` (the model as a file and an MLflow version, ``--model``). Then ``graph`` (connected
components, guards), ``stable_ids`` (cdp_ids carried over), ``resolve`` (all of it end to end); ``rules`` is
``conf/identity.yaml``.
"""
