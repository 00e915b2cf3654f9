// Independent reference for ztbridge's UnixFS CIDs: js ipfs-unixfs-importer, options pinned
// explicitly to what `ipfs add --cid-version=1` does (see docs in gateway/store/unixfs.py).
//
// usage: node unixfs_cid.mjs FILE...
// The environment may override CHUNK_SIZE (default 262144) and MAX_CHILDREN (default 174);
// tests use small values to get deep trees from small inputs.
// prints one JSON object per FILE, one per line: {"file", "size", "root", "blocks": [cid...]}
// where "blocks" lists every block CID of that file's DAG, sorted.
import { readFile } from 'node:fs/promises'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const chunkSize = Number(process.env.CHUNK_SIZE ?? 262144)
const maxChildrenPerNode = Number(process.env.MAX_CHILDREN ?? 174)

const options = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize }),
  layout: balanced({ maxChildrenPerNode }),
  wrapWithDirectory: false
}

for (const file of process.argv.slice(2)) {
  const bytes = await readFile(file)
  // Record every CID the importer puts: MemoryBlockstore keys by multihash only, so its
  // getAll() cannot tell a raw leaf from a dag-pb node with the same digest.
  const memory = new MemoryBlockstore()
  const seen = new Set()
  const blockstore = {
    async put (cid, block, opts) {
      seen.add(cid.toString())
      return memory.put(cid, block, opts)
    }
  }
  let root
  for await (const entry of importer([{ content: bytes }], blockstore, options)) {
    root = entry.cid
  }
  const blocks = [...seen].sort()
  process.stdout.write(JSON.stringify({ file, size: bytes.length, root: root.toString(), blocks }) + '\n')
}
