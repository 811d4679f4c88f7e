"""The lab's ingress controller and Gateway API implementation with a real nginx data plane.

- ``controller.IngressController``: watches the store, renders and reloads nginx, publishes status and
  ``<state>/ingress.json`` (started by ``asgardlab.cluster``).
- ``nginx``: the nginx process (Debian's ``nginx`` package) under ``<state>/ingress/``.
- ``ingresses`` / ``annotations``: Ingress objects and the ingress-nginx annotations the lab implements.
- ``gateway`` / ``gwschema``: Gateway API v1 GatewayClass, Gateway, HTTPRoute (data plane, status, schemas).
- ``admission``: API-server side rules (DefaultIngressClass, Ingress validation, Gateway API defaults and CEL).
- ``model``: servers/locations/upstreams and their rendering as nginx.conf.

See docs/lab.md, "Ingress and Gateway API".
"""
