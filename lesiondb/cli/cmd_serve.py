"""``lesiondb serve``: review in the browser (patients, timelines, lesion crops, the review queue)."""
from __future__ import annotations

import os

import click

from ..errors import ConfigError
from ..graph.keys import check_pseudonym_key
from .common import handle_errors, pass_app, pseudonym_key_option

MISSING = ("`lesiondb serve` needs Starlette, uvicorn and Jinja2 (dependencies of lesiondb): "
           "pip install 'starlette>=0.40' 'uvicorn>=0.30' 'jinja2>=3.1'  ({})")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. The graph holds patient data: anything but this machine "
                   "(127.0.0.1) lets other machines read it, and prints a warning.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(1, 65535))
@click.option("--images", "images", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A folder holding the graph's images (DICOM series, a synthetic cohort, or DeepLesion's "
                   "Images_png); repeat for several [default: the demo's cohort, DATA_DIR/demo, when there].")
@click.option("--reviewer", envvar="USER", help="Reviewer name recorded when the page gives none [default: $USER].")
@click.option("--crop-cache/--no-crop-cache", default=True, show_default=True,
              help="Keep rendered crops in DATA_DIR/cache/crops (a private folder) as well as in memory.")
@click.option("-k", "k_similar", default=8, show_default=True, type=click.IntRange(1, 50),
              help="Similar lesions shown on a lesion's page.")
@click.option("--log-requests", is_flag=True, help="Log every request on stderr.")
@pseudonym_key_option("the key the ingest used (finds the images' series by their pseudonyms)")
@pass_app
@handle_errors
def command(app, host: str, port: int, images: tuple[str, ...], reviewer: str | None, crop_cache: bool,
            k_similar: int, log_requests: bool, pseudonym_key: str | None) -> None:
    """Review in the browser: patients, timelines, lesion crops and the proposal review queue.

    \b
      lesiondb demo && lesiondb serve            # then open http://127.0.0.1:8750/
      lesiondb serve --images /data/ct           # a DICOM folder tree (found by headers)
      lesiondb serve --images Images_png         # DeepLesion PNG slices

    The pages show pseudonymous ids only. Accept and Reject in the queue call the same functions
    as `lesiondb review accept|reject`. Crops are read from the images folders (the graph stores
    no paths); without them the pages show a placeholder where each crop would be.
    """
    try:
        from ..web import create_app, serve  # the web extra: imported only by this command
        from ..web.server import allowed_hosts, demo_images, is_loopback
    except ImportError as exc:
        raise click.ClickException(MISSING.format(exc)) from exc
    folders = list(images)
    if not folders:
        demo = demo_images(app.data_dir)
        if demo is not None:
            folders = [str(demo)]
            click.echo(f"images: the demo cohort in {demo} (pass --images for others)", err=True)
        else:
            click.echo("images: none given (--images DIR): crops show a placeholder", err=True)
    if not is_loopback(host):
        click.secho(f"warning: listening on {host}: other machines can read this graph's patient data "
                    "(pseudonymised) and record review decisions. Use only on a trusted network.",
                    fg="yellow", err=True)
    engine = app.engine()
    ids = app.ids(pseudonym_key)
    if folders:
        try:
            check_pseudonym_key(engine, ids)
        except ConfigError:
            click.secho("warning: the pseudonym key is not the one this graph was built with: no series under "
                        "the images folders will match, and crops will show a placeholder (pass the ingest's "
                        "key with --pseudonym-key)", fg="yellow", err=True)
    web = create_app(engine, ids, folders,
                     cache_dir=app.crop_cache if crop_cache else None,
                     reviewer=reviewer or os.environ.get("USER"), allowed_hosts=allowed_hosts(host),
                     k_similar=k_similar)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"lesiondb serve: http://{shown}:{port}/  (review queue: /proposals; Ctrl-C to stop)", err=True)
    serve(web, host, port, log_level="info" if log_requests else "warning", access_log=log_requests)
