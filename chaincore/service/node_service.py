"""Wiring the node into twistd (placeholder until the node service lands: serves /status only)."""

import json

from twisted.application import service


def make_node_service(options):
    from klein import Klein
    from twisted.application.strports import service as strports_service
    from twisted.web.server import Site

    from .. import __version__
    from ..core.params import NETWORKS

    params = NETWORKS[options["network"]]
    app = Klein()

    @app.route("/status", methods=["GET"])
    def status(request):
        request.setHeader("Content-Type", "application/json")
        return json.dumps({"version": __version__, "network": params.name,
                           "genesis_hash": params.genesis_hash.hex(), "height": 0,
                           "blockchain_length": 1}).encode()

    top = service.MultiService()
    strports_service(options["endpoint"], Site(app.resource())).setServiceParent(top)
    return top
