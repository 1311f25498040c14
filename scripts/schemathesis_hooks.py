"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

The upload routes read the form's text fields first and then stream the file part, so the
file must be the form's last part (as the contract says). OpenAPI cannot state an order of
parts, and schemathesis sends them in any order; without this, nearly every upload it
generates would be refused for the order alone, and the success paths would go untested.
"""

import schemathesis

# The file part of each upload route, which must come last.
FILE_PARTS = {
    "/api/management/v1/deployments/artifacts": "artifact",
    "/api/management/v1/deployments/artifacts/generate": "file",
}


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    part = FILE_PARTS.get(operation.path) if operation is not None else None
    if part is not None and isinstance(body, dict) and part in body:
        rest = {name: value for name, value in body.items() if name != part}
        return {**rest, part: body[part]}
    return body
