"""The lesion embedding: encoders, the embedding stage, the SIMILAR_TO graph and its services.

- :func:`load_encoder` — the one way to load an encoder (:class:`Encoder`: weights + id + config);
- :func:`embed_deeplesion`, :func:`embed_cohort` — embed the graph's lesions from their images and
  keep every lesion's k nearest neighbours as SIMILAR_TO edges; :func:`rebuild_edges` with another k;
- :func:`similar`, :func:`similar_to_vector`, :func:`similar_to_region` — retrieval;
- :func:`predict_types`, :func:`cluster` — type prediction and Louvain clusters;
- :func:`train_encoder` — train an encoder on a cohort (``lesiondb train``).
"""
from .encoder import Encoder, load_encoder
from .region import RegionQuery, similar_to_region
from .services import (
    Clustering,
    TypePredictions,
    cluster,
    cluster_members,
    clusters,
    predict_types,
    similar,
    similar_to_vector,
)
from .stage import EmbedOptions, EmbedResult, embed_cohort, embed_deeplesion, embed_lesions, rebuild_edges

__all__ = ["Clustering", "EmbedOptions", "EmbedResult", "Encoder", "RegionQuery", "TypePredictions", "cluster",
           "cluster_members", "clusters", "embed_cohort", "embed_deeplesion", "embed_lesions", "load_encoder",
           "predict_types", "rebuild_edges", "similar", "similar_to_region", "similar_to_vector"]
