"""Regional products: one land-cover map of a region per target date, published as STAC with a report page.

``build.build_product`` turns a region's mapped scene pairs into a product: the best-observation
mosaic over the AOI (``mosaic``), geodesic class areas (``areas``), class names and colours for GIS
tools (``style``), the change since the previous product (``change``), agreement with a reference
(``agreement``), the report page (``report``) and the STAC item, written last (``catalog``).
"""
