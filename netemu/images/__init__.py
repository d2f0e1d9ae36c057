"""Images: `docker save` archives and OCI image layouts, imported into a content-addressed store
of unpacked layers that a host's root overlays.

- archive.py: reading an archive (tar or directory), its manifests and image configs;
- unpack.py: one layer's tar into a directory, OCI whiteouts as overlay whiteouts;
- limits.py: the cap per image and the store's free space, charged before each write;
- imagestore.py: the store itself (layers, image records, locking) and its default instance.

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
from netemu.images.unpack import unpack_layer

__all__ = [
    "LIB_DIR",
    "MAX_BYTES_DEFAULT",
    "MAX_BYTES_ENV",
    "STORE_DIR",
    "Budget",
    "ImageInfo",
    "ImageStore",
    "find_image",
    "get_image",
    "import_archive",
    "import_image",
    "layer_dirs",
    "list_images",
    "max_image_bytes",
    "parse_size",
    "remove_image",
    "store",
    "unpack_layer",
]
