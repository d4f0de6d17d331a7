"""The feature catalog: Feast projects behind the hub, browsed and reused from notebooks.

- :mod:`.store`: where a project's registry, Parquet sources and online store live, and the
  Feast configuration the ``features`` service opens them with.
- :mod:`.seed`: the example project ``rides`` (generated data, nothing downloaded).
- :mod:`.catalog`: the registry as plain JSON for search and details, with freshness.
- :mod:`.stats`: statistics and sample rows of a source, capped and cached.
- :mod:`.proposals`: a proposed feature view read without running it, and its review checks
  (a facade over :mod:`.proposalread`, :mod:`.proposaldata`, :mod:`.proposalprints`,
  :mod:`.proposalcheck` and :mod:`.proposalbuild`); :mod:`.reviews`: proposals and the audit
  trail in the platform's database.
- :mod:`.lineage`: the MLflow runs and registered models that used a feature view.
- :mod:`.service`: the ``features`` hub service (``/services/features/``): its reads and routes;
  :mod:`.base` its context and access rule; :mod:`.writes` its writes.
- :mod:`.client`: what a kernel uses: a real ``feast.FeatureStore`` whose registry and offline
  retrievals go through the service, with the person's own hub token.

Feast (and pandas, pyarrow) are imported only where a function needs them: not by the hub, not
by ``import hubml.widgets``, not by kernels that do not use features.
"""
