"""Graph families for bench/popular_architectures.py, written after their reference code (the same
module structure and ops, in plain PyTorch: PyTorch Geometric is not a dependency) and exported
with torch.onnx:

- gcn: PyG's GCN for node classification (examples/gcn.py): dropout, GCNConv, ReLU, dropout,
  GCNConv. GCNConv as PyG computes it: `lin` (Linear, no bias, glorot), gcn_norm (self-loops added
  by add_remaining_self_loops: the edge list without its self-loops, then one loop per node; the
  in-degree scatter-summed at the targets, deg^-1/2 with inf masked to 0, norm = d[row]·d[col]),
  propagate (x_j gathered by index_select at the sources, message x_j·norm, summed into the targets
  by scatter_add_ onto zeros of [num_nodes, C], PyG's SumAggregation), then the bias. 12 nodes of
  6 features, 30 directed edges (a fixed random graph: no duplicates, no self-loops, in- and
  out-degree differ so row and col cannot be confused), hidden 16, 4 classes; biases random (a
  trained-looking model: a fresh GCNConv's zeros would coincide with other initializers). Opset 16
  (ScatterElements' reduction='add'; earlier opsets export scatter_add_ as a plain scatter plus Add,
  wrong for repeated targets), nodes and edges dynamic; loss: cross-entropy over every node
  (eval: dropout off). add_remaining_self_loops' boolean mask exports as NonZero: the edge count
  after it depends on edge_index's values, not only its shape (refit's step probes shapes with
  zero inputs, where every edge is a self-loop). `gcn_model(remaining_self_loops=False)` appends
  the loops without the mask (PyG's add_self_loops: the same values on a graph without self-loops,
  no NonZero) for comparison.

`gcn_graph(nodes, edges, seed)` and `gcn_model()` are also used by scratch scripts that export the
same model's references on other graphs.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- GCN (torch_geometric.nn.GCNConv)
def scatter_sum(src, index, dim_size):
    """torch_geometric.utils.scatter(src, index, dim=0, dim_size, reduce='sum'): the index broadcast
    to src's shape, scatter_add_ onto zeros."""
    size = (dim_size,) + tuple(src.shape[1:])
    if src.dim() > 1:
        index = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return src.new_zeros(size).scatter_add_(0, index, src)


def add_remaining_self_loops(edge_index, num_nodes):
    mask = edge_index[0] != edge_index[1]
    loop_index = torch.arange(0, num_nodes, dtype=torch.long, device=edge_index.device)
    loop_index = loop_index.unsqueeze(0).repeat(2, 1)
    return torch.cat([edge_index[:, mask], loop_index], dim=1)


def add_self_loops(edge_index, num_nodes):
    """torch_geometric.utils.add_self_loops: one loop per node appended, existing loops kept."""
    loop_index = torch.arange(0, num_nodes, dtype=torch.long, device=edge_index.device)
    return torch.cat([edge_index, loop_index.unsqueeze(0).repeat(2, 1)], dim=1)


def gcn_norm(edge_index, num_nodes, dtype, remaining=True):
    """PyG's gcn_norm (improved=False, add_self_loops=True, flow='source_to_target', no edge weights).
    remaining=False: add_self_loops in place of add_remaining_self_loops (the same values on a
    graph without self-loops, and no NonZero in the export)."""
    edge_index = (add_remaining_self_loops if remaining else add_self_loops)(edge_index, num_nodes)
    edge_weight = torch.ones((edge_index.size(1),), dtype=dtype, device=edge_index.device)
    row, col = edge_index[0], edge_index[1]
    deg = scatter_sum(edge_weight, col, num_nodes)
    deg_inv_sqrt = deg.pow_(-0.5)
    deg_inv_sqrt.masked_fill_(deg_inv_sqrt == float("inf"), 0)
    return edge_index, deg_inv_sqrt[row] * edge_weight * deg_inv_sqrt[col]


class GCNConv(nn.Module):
    def __init__(self, in_channels, out_channels, remaining_self_loops=True):
        super().__init__()
        self.remaining = remaining_self_loops
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.xavier_uniform_(self.lin.weight)  # PyG's Linear(weight_initializer='glorot')
        nn.init.normal_(self.bias, 0.0, 0.1)  # PyG zeros it; random here (trained-looking)

    def forward(self, x, edge_index):
        num_nodes = x.size(0)
        edge_index, edge_weight = gcn_norm(edge_index, num_nodes, x.dtype, self.remaining)
        x = self.lin(x)
        x_j = x.index_select(0, edge_index[0])  # MessagePassing._lift: source_to_target, j = row
        msg = edge_weight.view(-1, 1) * x_j  # GCNConv.message
        out = scatter_sum(msg, edge_index[1], num_nodes)  # SumAggregation at the targets
        return out + self.bias


class GCN(nn.Module):
    def __init__(self, in_channels=6, hidden_channels=16, out_channels=4, remaining_self_loops=True):
        super().__init__()
        self.conv1 = GCNConv(in_channels, hidden_channels, remaining_self_loops)
        self.conv2 = GCNConv(hidden_channels, out_channels, remaining_self_loops)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.5, training=self.training)
        x = self.conv1(x, edge_index).relu()
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index)


def gcn_graph(nodes=12, edges=30, seed=1, features=6):
    """A fixed random directed graph: `edges` distinct (source, target) pairs without self-loops,
    node features, and a label per node."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.tensor([(s, t) for s in range(nodes) for t in range(nodes) if s != t], dtype=torch.long)
    edge_index = pairs[torch.randperm(len(pairs), generator=g)[:edges]].t().contiguous()
    x = torch.randn(nodes, features, generator=g)
    y = torch.randint(0, 4, (nodes,), generator=g)
    return x, edge_index, y


def gcn_model(remaining_self_loops=True):
    torch.manual_seed(0)
    return GCN(remaining_self_loops=remaining_self_loops)


def gcn_case():
    x, edge_index, y = gcn_graph()
    return dict(model=gcn_model(), inputs={"x": x, "edge_index": edge_index}, outputs=["logits"], opset=16,
                dynamic={"x": {0: "nodes"}, "edge_index": {1: "edges"}, "logits": {0: "nodes"}},
                target=lambda out: y,
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"gcn": gcn_case}
