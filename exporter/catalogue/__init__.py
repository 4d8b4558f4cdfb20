"""The catalogue: the one place that knows each Tencent Cloud product.

Owns every per-product fact: the status action and its version, the ID's kind, the published quotas, the
status words and the phase of each (`phases`: the one outcome vocabulary every product's statuses map onto,
like Kubernetes' pod phase), the not-found error codes, the answer fields and how to read them,
the shape of the answer the simulator gives (`product`: what an entry is; `products`: the entries, the
one table of supported products; `table`: the docs' product table made from it), each product's list
API for discovery and its list answer's shape (`listapis`), the parsers that turn a status answer into an
observation (`parsers`), the named shapes of status answers (`shapes`), and the helpers that read Tencent's
answer fields (`apifields`).
Nothing outside this wing branches on a product name: it asks the catalogue.

May import: the standard library only (it is the bottom layer, beside `exporter.log` and
`exporter.buildinfo`).
"""
