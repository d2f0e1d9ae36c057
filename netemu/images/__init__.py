"""Images: `docker save` archives, OCI image layouts and registry pulls, imported into a
content-addressed store of unpacked layers that a host's root overlays.

- archive.py: reading an archive (tar or directory), its manifests and image configs;
- unpack.py: one layer's tar into a directory, OCI whiteouts as overlay whiteouts;
- limits.py: the cap per image and the store's free space, charged before each write;
- imagestore.py: the store itself (layers, image records, aliases, locking) and its default instance;
- reference.py: image references parsed as Docker does, short names resolved by registries.conf;
- registry.py: pulls from registries and the Docker daemon through skopeo (`pull`, `ensure_image`).

This package knows nothing of labs or topologies: `remove_image` asks its caller which labs use
an image."""

from netemu.images.imagestore import (
    LIB_DIR,
    STORE_DIR,
    ImageInfo,
    ImageStore,
    find_image,
    get_image,
    import_archive,
    import_image,
    layer_dirs,
    list_images,
    remove_image,
    store,
)
from netemu.images.limits import MAX_BYTES_DEFAULT, MAX_BYTES_ENV, Budget, max_image_bytes, parse_size
from netemu.images.reference import Reference, RegistriesConf, load_registries_conf, parse_reference, resolve
from netemu.images.registry import POLICIES, ensure_image, machine_platform, pull
from netemu.images.unpack import unpack_layer

__all__ = [
    "LIB_DIR",
    "MAX_BYTES_DEFAULT",
    "MAX_BYTES_ENV",
    "POLICIES",
    "STORE_DIR",
    "Budget",
    "ImageInfo",
    "ImageStore",
    "Reference",
    "RegistriesConf",
    "ensure_image",
    "find_image",
    "get_image",
    "import_archive",
    "import_image",
    "layer_dirs",
    "list_images",
    "load_registries_conf",
    "machine_platform",
    "max_image_bytes",
    "parse_reference",
    "parse_size",
    "pull",
    "remove_image",
    "resolve",
    "store",
    "unpack_layer",
]
