"""``lesiondb query NAME -p key=value``: run a named Cypher file."""
from __future__ import annotations

import json

import click

from ..graph import queries
from .common import emit, handle_errors, pass_app


def _parse_value(raw: str):
    """JSON where it parses (numbers, lists, null, true), else the raw string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@click.command("query")
@click.argument("name", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A query parameter; VALUE is parsed as JSON when it can be (42, null, [1,2]).")
@click.option("--list", "list_", is_flag=True, help="List the named queries and their parameters.")
@click.option("--write", is_flag=True, help="Run in a write transaction (for queries that change the graph).")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON array.")
@pass_app
@handle_errors
def command(app, name, params, list_, write, as_json) -> None:
    """Run the named Cypher query NAME (a .cypher file of lesiondb's cypher/ folder)."""
    dialect = "neo4j" if app.uri else "falkordb"
    if list_ or not name:
        rows = []
        for n in queries.names(dialect):
            q = queries.load(n, dialect)
            rows.append({"name": n, "params": q.params, "returns": q.returns, "description": q.description})
        emit(rows, as_json, lambda rs: "\n".join(
            f"{r['name']:<28} {', '.join(r['params']) or '-'}" for r in rs))
        return
    kv = {}
    for p in params:
        if "=" not in p:
            raise click.BadParameter(f"{p!r} is not KEY=VALUE", param_hint="-p")
        k, v = p.split("=", 1)
        kv[k.strip()] = _parse_value(v)
    q = app.engine().query(name)
    for k in q.params:  # undeclared optional filters default to null
        kv.setdefault(k, None)
    if "limit" in q.params and kv.get("limit") is None:
        kv["limit"] = 1000
    eng = app.engine()
    rows = eng.execute(name, **kv) if write else eng.run(name, **kv)
    emit(rows, as_json, _table)


def _table(rows) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    out = ["\t".join(cols)]
    for r in rows:
        out.append("\t".join(json.dumps(r[c], default=str) if isinstance(r[c], dict | list) else str(r[c])
                             for c in cols))
    return "\n".join(out)
