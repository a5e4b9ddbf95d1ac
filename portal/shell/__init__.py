"""The UI shell: the Events and Tasks pages, the portal's access rule, the live socket consumer,
the login and security middleware, and the template context.

It sits above the domain apps (it may import vms, storage and accounts) and below the project
config (settings, urls, asgi). No app imports it: the helpers the apps' views share live below,
modal_done in portal/kernel/dialogs.py and admin_portal_required in accounts/access.py. The
import-linter contracts in pyproject.toml hold this.
"""
