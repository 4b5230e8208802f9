"""Identity resolution: deterministic and probabilistic links between records, clusters, stable cdp_ids."""
