"""Container images: references, a registry client, a content-addressed store.

reference  parse and normalise image references as Docker does
registry   the OCI distribution API client (pull), with its auth challenges
store      blobs by digest, unpacked layers, the name index; crash-safe
unpack     apply a layer tar to a directory with overlayfs whiteouts
archive    load and save `docker save` archives and OCI image layouts
"""
