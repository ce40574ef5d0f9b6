"""SAEs: resolve a spec, check it cheaply, load it with sae-lens, encode activations, and record which SAE it was.

* `loading`: spec strings (``"default"``, a shipped name, a folder, ``"RELEASE:SAE_ID"``), `check_sae_spec`
  (milliseconds, before a model loads), `load_sae`, and `check_site` (an SAE against a model's hook).
* `encoding`: chunked encoding (`encode`), sparse codes (`encode_sparse`, `SparseCodes`) and reconstruction
  totals (`ReconstructionStats`).
* `records`: what manifests, caches and saved detectors record of an SAE (`sae_info`, `sae_entry`,
  `sae_identity`, `sae_fingerprint`) and `check_sae_identity`, so that latent indices are never read through
  another SAE.
* `site`: a model, an SAE and their hook opened together (`open_site`).

The names below are the public face; import them from ``personas.saes``.
"""

from personas.saes.encoding import ReconstructionStats, SparseCodes, encode, encode_sparse, sample_positions
from personas.saes.loading import (
    CFG_FILE,
    WEIGHTS_FILE,
    check_sae_folder,
    check_sae_spec,
    check_site,
    data_dir,
    default_sae_path,
    load_sae,
    release_config,
    same_model,
    shipped_saes,
)
from personas.saes.records import (
    check_sae_identity,
    recorded_sae_spec,
    sae_entry,
    sae_fingerprint,
    sae_identity,
    sae_info,
    weight_signature,
)
from personas.saes.site import Site, default_hook, open_site

__all__ = [
    "CFG_FILE", "WEIGHTS_FILE", "ReconstructionStats", "Site", "SparseCodes", "check_sae_folder",
    "check_sae_identity", "check_sae_spec", "check_site", "data_dir", "default_hook", "default_sae_path", "encode",
    "encode_sparse", "load_sae", "open_site", "recorded_sae_spec", "release_config", "sae_entry", "sae_fingerprint",
    "sae_identity", "sae_info", "same_model", "sample_positions", "shipped_saes", "weight_signature",
]
