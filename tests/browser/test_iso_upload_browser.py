"""The Images sub-tab of an ISO domain in a browser: Upload sends a real (xorriso-built) ISO
in chunks with a progress bar, which then follows the job writing it into the host's pool;
the image shows OK in the list and Remove takes it away; a file that is not an ISO is refused
in the window."""

import re

import pytest
from iso_build import built_iso
from playwright.sync_api import expect

from storage.choices import DomainFunction, PoolStatus, StorageDomainStatus
from storage.models import IsoImage, StorageDomain, StorageDomainHost
from vms import testhosts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LIVE = 15_000


@pytest.fixture
def iso_domain(inventory):
    """An Active ISO domain of the inventory's data center, its pool on the host (before the
    monitor connects)."""
    domain = StorageDomain.objects.create(
        name="iso1",
        data_center=inventory.dc,
        domain_function=DomainFunction.ISO,
        pool_name="vireo-iso1",
        path="/var/lib/vireo/iso1",
        status=StorageDomainStatus.ACTIVE,
    )
    StorageDomainHost.objects.create(
        domain=domain, host=inventory.host, status=PoolStatus.ACTIVE, free_bytes=1 << 40
    )
    testhosts.node_file_write(inventory.host)
    return domain


def test_upload_an_iso_with_its_progress_bar(iso_domain, portal, console_errors, tmp_path):
    page = portal.page
    page.locator("nav.main-tabs").get_by_role("link", name="Storage").click()
    page.locator("#domain-results tr.domain-row", has_text="iso1").click()
    page.locator("#domain-details").get_by_role("link", name="Images").click()
    expect(page.locator("#iso-images tr.empty")).to_contain_text("No images")
    page.locator("#image-toolbar").get_by_role("button", name="Upload").click()
    window = page.locator("#modal")
    expect(window.locator("h2")).to_have_text("Upload Image")

    # Not an ISO: refused in the window, nothing left in the list.
    fake = tmp_path / "notes.iso"
    fake.write_bytes(b"\0" * 40_000)
    window.locator("input[type=file]").set_input_files(str(fake))
    window.get_by_role("button", name="Upload").click()
    expect(window.locator("[data-upload-error]")).to_contain_text("is not an ISO image")
    console_errors.clear()  # the refusal's HTTP 400 is the expected answer
    assert not IsoImage.objects.exists()

    source = built_iso(2)
    window.locator("input[type=file]").set_input_files(str(source))
    window.get_by_label("Guest tools ISO").check()
    window.get_by_role("button", name="Upload").click()
    bar = window.locator("[data-upload-progress]")
    expect(bar).to_be_visible()
    expect(bar).to_contain_text(f"{source.name} was uploaded.", timeout=LIVE)
    expect(bar.locator(".bar")).to_have_attribute("style", re.compile(r"width: 100%"))
    window.get_by_role("button", name="Done").click()
    expect(window).to_be_hidden()

    row = page.locator("#iso-images tr.image-row", has_text=source.name)
    expect(row).to_contain_text("OK", timeout=LIVE)
    expect(row).to_contain_text("Guest Tools")
    page.screenshot(path=str(tmp_path / "images.png"))
    image = IsoImage.objects.get(name=source.name)
    assert image.size_bytes == source.stat().st_size and image.guest_tools

    # Remove: the row selected, its window, the volume and the row gone.
    row.click()
    toolbar = page.locator("#image-toolbar")
    expect(toolbar.get_by_role("button", name="Unmark Guest Tools")).to_be_enabled()
    toolbar.get_by_role("button", name="Remove").click()
    expect(window.locator("h2")).to_have_text("Remove ISO Image(s)")
    window.get_by_role("button", name="OK").click()
    expect(page.locator("#messages .msg")).to_contain_text(f"Removing {source.name}.")
    expect(page.locator("#iso-images tr.empty")).to_be_visible(timeout=LIVE)


def test_an_interrupted_upload_resumes_from_where_it_stopped(iso_domain, portal, console_errors):
    page = portal.page
    source = built_iso(20)  # three chunks of 8 MiB
    lost = []

    def drop_second_chunk(route):
        if not lost:
            lost.append(route.request.url)
            route.abort()  # the network goes away under the second chunk
        else:
            route.continue_()

    page.route(re.compile(r"/chunk/\?offset=8388608&"), drop_second_chunk)
    page.locator("nav.main-tabs").get_by_role("link", name="Storage").click()
    page.locator("#domain-results tr.domain-row", has_text="iso1").click()
    page.locator("#domain-details").get_by_role("link", name="Images").click()
    page.locator("#image-toolbar").get_by_role("button", name="Upload").click()
    window = page.locator("#modal")
    window.locator("input[type=file]").set_input_files(str(source))
    window.get_by_role("button", name="Upload").click()
    expect(window.locator("[data-upload-error]")).to_contain_text(
        "The transfer was interrupted at 8.0 MiB"
    )
    console_errors.clear()  # the aborted request
    image = IsoImage.objects.get(name=source.name)
    assert image.status == "locked" and image.uploaded_bytes == 8 << 20

    window.get_by_role("button", name="Upload").click()  # the same file again: resumed
    bar = window.locator("[data-upload-progress]")
    expect(bar).to_contain_text(f"{source.name} was uploaded.", timeout=LIVE)
    assert len(lost) == 1
    image.refresh_from_db()
    assert image.status == "ok" and image.size_bytes == source.stat().st_size
    window.get_by_role("button", name="Done").click()
    row = page.locator("#iso-images tr.image-row", has_text=source.name)
    expect(row).to_contain_text("OK", timeout=LIVE)
