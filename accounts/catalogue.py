"""The one list of action permissions and of the built-in roles (the chapter's role tables).

A role is a named set of these actions. Scope comes from where the role is assigned (the
whole system, a data center, a cluster, a host, a storage domain, a logical network, a vNIC
profile, a template or a VM) and reaches everything under that object.
"""

# action -> label shown in the role editor
ACTIONS: dict[str, str] = {
    "login": "Log in to the User Portal",
    "view": "See the object and what is under it",
    "run": "Run virtual machines",
    "shutdown": "Shut down virtual machines",
    "poweroff": "Power off virtual machines",
    "suspend": "Suspend virtual machines",
    "reboot": "Reboot virtual machines",
    "console": "Connect to the console",
    "change_cd": "Change the CD of virtual machines",
    "console_takeover": "Take over a console another user holds",
    "edit_vm": "Edit virtual machines (and their single sign-on setting)",
    "remove": "Remove virtual machines",
    "clone": "Clone virtual machines",
    "import_vm": "Import virtual machines defined outside Vireo",
    "migrate_vm": "Migrate virtual machines between hosts",
    "snapshots": "Create and use snapshots",
    "manage_permissions": "Assign and remove permissions",
    "create_vm": "Create virtual machines",
    "create_vm_from_template": "Create virtual machines from templates",
    "create_disk": "Create disks",
    "edit_disk": "Attach and remove floating disks",
    "create_template": "Create templates",
    "edit_template": "Edit templates",
    "remove_template": "Remove templates",
    "export_template": "Export templates",
    "import_template": "Import templates",
    "configure_network": "Configure logical networks",
    "attach_vnic": "Attach VM network interfaces to a network",
    "create_datacenter": "Create data centers",
    "edit_datacenter": "Edit data centers",
    "remove_datacenter": "Remove data centers",
    "create_cluster": "Create clusters",
    "edit_cluster": "Edit clusters",
    "remove_cluster": "Remove clusters",
    "manipulate_affinity_groups": "Manipulate affinity groups",
    "add_host": "Add hosts",
    "edit_host": "Edit hosts",
    "remove_host": "Remove hosts",
    "manipulate_host": "Move hosts to Maintenance and activate them",
    "view_storage": "See storage domains",
    "edit_storage": "Manage storage domains",
    "create_storage_domain": "Create storage domains and attach them to data centers",
    "manage_images": "Upload, remove and mark ISO images in ISO domains",
    "manage_roles": "Create, edit and remove roles; configure system permissions",
}

VM_USE = (
    "login",
    "view",
    "run",
    "shutdown",
    "poweroff",
    "suspend",
    "reboot",
    "console",
    "change_cd",
)
TEMPLATE_ADMIN = (
    "view",
    "create_template",
    "edit_template",
    "remove_template",
    "export_template",
    "import_template",
)
HOST_ADMIN = ("view", "edit_host", "remove_host", "manipulate_host")
ALL = tuple(ACTIONS)
STORAGE_ADMIN = ("view_storage", "edit_storage", "create_storage_domain", "manage_images")

# name -> (administrative role?, description, actions)
BUILTIN_ROLES: dict[str, tuple[bool, str, tuple[str, ...]]] = {
    "SuperUser": (True, "System administrator: every action on every object.", ALL),
    "DataCenterAdmin": (
        True,
        "Administrator of all objects under a data center, except its storage.",
        tuple(a for a in ALL if a not in STORAGE_ADMIN + ("manage_roles",)),
    ),
    "ClusterAdmin": (
        True,
        "Administrator of all objects under a cluster.",
        VM_USE
        + (
            "edit_vm",
            "remove",
            "clone",
            "import_vm",
            "migrate_vm",
            "snapshots",
            "manage_permissions",
            "create_vm",
            "create_vm_from_template",
            "edit_disk",
            "console_takeover",
            "create_cluster",
            "edit_cluster",
            "remove_cluster",
            "manipulate_affinity_groups",
            "add_host",
        )
        + HOST_ADMIN[1:],
    ),
    "HostAdmin": (
        True,
        "Administrator of a host: edit and remove it, move it to Maintenance and activate it.",
        HOST_ADMIN,
    ),
    "NetworkAdmin": (
        True,
        "Administrator of a logical network.",
        ("view", "configure_network", "attach_vnic"),
    ),
    "StorageAdmin": (
        True,
        "Storage Administrator: can create, delete, configure and manage a specific storage domain.",
        ("view", *STORAGE_ADMIN),
    ),
    "TemplateAdmin": (
        True,
        "Create, edit, export, import and remove templates in its scope.",
        TEMPLATE_ADMIN,
    ),
    "UserRole": (
        False,
        "Can log in to the User Portal and use virtual machines and pools.",
        VM_USE,
    ),
    "PowerUserRole": (
        False,
        "Can create and manage virtual machines and templates (VmCreator + DiskCreator + TemplateCreator).",
        ("login", "view", "create_vm", "create_disk", "create_template"),
    ),
    "UserVmEngine": (
        False,
        "System administrator of a virtual machine: edit and remove it, assign user permissions on it, "
        "use snapshots and templates.",
        VM_USE
        + (
            "edit_vm",
            "remove",
            "clone",
            "snapshots",
            "manage_permissions",
            "create_vm_from_template",
        ),
    ),
    "UserTemplateBasedVm": (
        False,
        "Can create virtual machines only from templates.",
        ("login", "view", "create_vm_from_template"),
    ),
    "VmCreator": (False, "Can create virtual machines in the User Portal.", ("login", "create_vm")),
    "DiskCreator": (False, "Can create disks.", ("login", "create_disk")),
    "TemplateCreator": (False, "Can create templates.", ("login", "create_template")),
    "VnicProfileUser": (
        False,
        "Can attach VM network interfaces to the logical network.",
        ("login", "attach_vnic"),
    ),
}

CREATOR_ROLE = "UserVmEngine"
