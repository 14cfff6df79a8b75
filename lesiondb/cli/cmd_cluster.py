"""``lesiondb cluster``: communities of the SIMILAR_TO graph as (:Cluster) nodes."""
from __future__ import annotations

import click

from ..embedding import cluster, cluster_members, clusters
from .common import emit, handle_errors, pass_app


@click.command("cluster")
@click.option("--resolution", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Louvain resolution: above 1 gives more, smaller clusters.")
@click.option("--seed", default=0, show_default=True, help="Random seed (same graph + seed = same clusters).")
@click.option("--method", type=click.Choice(["auto", "networkx", "gds"]), default="auto", show_default=True,
              help="networkx: in this process; gds: Neo4j Graph Data Science on the server; "
                   "auto: gds when the Neo4j server has it and --resolution is 1, else networkx.")
@click.option("--show", is_flag=True, help="Only list the stored clusters; compute nothing.")
@click.option("--members", "members", metavar="CLUSTER_ID", help="Only list the lesions of one stored cluster.")
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, resolution, seed, method, show, members, dry_run, as_json) -> None:
    """Cluster lesions: Louvain communities of the SIMILAR_TO graph (networkx, seeded; or
    Neo4j Graph Data Science where the server has it).

    Replaces the stored clustering: one (:Cluster {clusterId, size, dominantType, …}) per
    community and (:Lesion)-[:IN_CLUSTER]->(:Cluster) for its members.
    """
    eng = app.engine()
    if members:
        rows = cluster_members(eng, members)
        emit(rows, as_json, lambda rs: "\n".join(
            f"{r['lesionId']:<24} {r.get('typeName') or (r.get('predictedTypeName') or '-') + '?':<14} "
            f"{r['patientId']}" for r in rs))
        return
    if show:
        rows = clusters(eng)
        emit(rows, as_json, _list)
        return
    out = cluster(eng, resolution=resolution, seed=seed, write=not dry_run, method=method)
    emit(out, as_json, _text)


def _list(rows) -> str:
    if not rows:
        return "no clusters stored (run `lesiondb cluster`)"
    lines = [f"{'cluster':<8} {'size':>6}  dominant type (share of labelled)"]
    for r in rows:
        share = "" if r.get("dominantTypeShare") is None else f" ({r['dominantTypeShare']:.0%} of {r['labelled']})"
        lines.append(f"{r['clusterId']:<8} {r['size']:>6}  {r.get('dominantType') or '-'}{share}")
    return "\n".join(lines)


def _text(o: dict) -> str:
    lines = [f"model {o['modelId']}: {o['clusters']} clusters of {o['lesions']} lesions "
             f"({o['edges']} edges, {o['method']}), modularity {o['modularity']}, type purity {o['typePurity']}"]
    lines.append(_list(o["largest"]))
    return "\n".join(lines)
