"""The UI shell: the Events and Tasks pages, the portal's access rule, the live socket consumer,
the login and security middleware, and the template context.

It sits above the domain apps (it may import vms, storage and accounts) and below the project
config (settings, urls, asgi). No app imports it, except for the shared view helpers
(modal_done, admin_portal_required) — see pyproject.toml's contracts.
"""
