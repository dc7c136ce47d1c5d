"""llmembed-bench: the research harness of llmembed (benchmark table, extraction speed, probes).

`llmembed-bench reproduce` runs the paper's benchmark table on this machine, with peers and
ablations.

One JSON record per (dataset, method, seed) is written atomically to
``<results>/runs/<dataset>/<method>/seed<k>.json`` as soon as it is done; a rerun skips the records
that exist (``force=True`` redoes them), so a long run can be interrupted and continued by anyone.
``docs/results.md`` and the plots are then regenerated from every record found
(:func:`write_report`, ``llmembed-bench reproduce --report-only``).

Methods (``--methods``; group names ``ours``, ``published``, ``ablations``, ``peers``, ``all``):

* ``llmembed``: the product's default recipe (``llmembed.config.DEFAULT_RECIPE``, ``cpu-stack``;
  ``--ours`` another), read at run time with ``load_recipe``; the published ladder and the
  ablations start from the fusion recipe ``cpu-fusion``.
* ``llmembed-published``: LLMEmbed as published on the same backbones: the decoder's last 5
  layers, token mean over a fixed max_length padding, the ``paper`` recipe's head and training
  settings with the double softmax, no standardization, fixed epochs, no validation split.
* ablations: each backbone alone (last layer; best layer picked by a ridge probe on the
  validation split), mean / max / concat fusion instead of co-occurrence, leave one backbone out,
  sigma sensitivity. Everything else as in the CPU recipe.
* peers: TF-IDF (word 1-2-grams) + linear SVM; logistic regression on each backbone's standard
  sentence embedding (MTEB-style); SetFit (all-MiniLM-L6-v2 body from the zoo) with a capped
  number of contrastive pairs.

Hyperparameters are always chosen on a validation split carved from the training split
(:func:`llmembed.training.split_validation`, the split the LLMEmbed heads early-stop on), never
on test. Features come from one :class:`~llmembed.cache.EmbeddingCache` per dataset group under
``cache_dir``; every backbone is extracted once per dataset with the union of the layers that any
method needs, and each method slices what it uses, so re-running the table does no forward pass.
Extraction cost is reported for each method's *exact* backbone specs, measured on a fixed sample
of texts (cache off) and scaled to the dataset.
"""
