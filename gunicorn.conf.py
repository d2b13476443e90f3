"""gunicorn settings read from the working directory (compose.yaml's web, bench/intake.py).

Each worker compiles the live approval matrix as it starts, so no agent's request pays for it.
"""


def post_worker_init(worker) -> None:
    from django.db import close_old_connections

    from policies.services import NoLiveMatrix, live_matrix

    try:
        live_matrix()
    except NoLiveMatrix:
        pass  # nothing published yet: the first decision after publication compiles it
    except Exception:  # a broken matrix is reported where it is used (work held for triage), not here
        worker.log.exception("could not compile the live approval matrix at start")
    finally:
        close_old_connections()
