"Tests for tlcourse.graphs: graph tensors, batching, message passing against dense and networkx references, attribute masking."
import math

import networkx as nx
import numpy as np
import pytest
import torch

from tlcourse.graphs import (
    CLUSTERING_CLASSES, DEGREE_CLASSES, GRAPH_FAMILIES, NODE_FEATURES, AttributeMaskingCollate, AttributeMaskingModel,
    GINLayer, GNN, Graph, GraphDataset, attribute_features, attribute_masking_loss, attribute_masking_task,
    attributes_from_features, check_batch, collate_graphs, graph_features, graph_from_networkx, graph_mean_pool,
    in_degree, make_graph_dataset, mask_attributes, masked_clustering_accuracy, masked_degree_accuracy,
    mean_input_features, neighbour_sum, node_attributes, random_graph, undirected_edge_index)


def random_nx_graphs():
    "A few random graphs of different kinds, with isolated nodes in some."
    return [nx.gnp_random_graph(25, 0.12, seed=0), nx.barabasi_albert_graph(20, 2, seed=1),
            nx.watts_strogatz_graph(16, 4, 0.3, seed=2), nx.random_labeled_tree(12, seed=3), nx.empty_graph(3)]


def dense_adjacency(edge_index, n):
    adjacency = torch.zeros(n, n)
    adjacency[edge_index[1], edge_index[0]] = 1.0
    return adjacency


# ------------------------------------------------------------------ graphs as tensors
def test_undirected_edge_index_has_both_directions_once():
    edge_index = undirected_edge_index([(0, 1), (1, 0), (1, 2), (2, 2)])   # a duplicate and a self loop
    assert sorted(map(tuple, edge_index.T.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert undirected_edge_index([]).shape == (2, 0)
    with pytest.raises(ValueError, match=r"\[num_edges, 2\]"):
        undirected_edge_index([[0, 1, 2]])


def test_graph_from_networkx_matches_networkx():
    for G in random_nx_graphs():
        graph = graph_from_networkx(G)
        assert graph.num_nodes == G.number_of_nodes() and graph.edge_index.shape[1] == 2 * G.number_of_edges()
        assert graph.x.shape == (G.number_of_nodes(), NODE_FEATURES)
        assert set(map(tuple, graph.edge_index.T.tolist())) == {(u, v) for u, v in G.edges} | {(v, u) for u, v in G.edges}


def test_bad_graphs_fail_with_clear_messages():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\)"):
        Graph(torch.ones(3, 2), torch.tensor([[0, 1], [1, 3]]))
    with pytest.raises(ValueError, match="ids must lie"):
        Graph(torch.ones(3, 2), torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match="float tensor"):
        Graph(torch.ones(3, 2, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer tensor \[2, num_edges\]"):
        Graph(torch.ones(3, 2), torch.tensor([[0, 1], [1, 2], [2, 0]]))      # pairs instead of [2, E]


# ------------------------------------------------------------------ batching
def test_collate_shifts_node_ids_and_records_graph_ids():
    graphs = [graph_from_networkx(G, y=i) for i, G in enumerate(random_nx_graphs())]
    batch = collate_graphs(graphs)
    sizes = [g.num_nodes for g in graphs]
    assert batch["num_graphs"] == len(graphs) and batch["labels"].tolist() == list(range(len(graphs)))
    assert batch["graph_index"].tolist() == [i for i, n in enumerate(sizes) for _ in range(n)]
    # the batch is the disjoint union: its adjacency matrix is block diagonal with each graph's adjacency
    blocks = torch.block_diag(*[dense_adjacency(g.edge_index, g.num_nodes) for g in graphs])
    assert torch.equal(dense_adjacency(batch["edge_index"], sum(sizes)), blocks)
    assert torch.equal(batch["x"], torch.cat([g.x for g in graphs]))


def test_collate_bad_input():
    with pytest.raises(ValueError, match="empty list"):
        collate_graphs([])
    a, b = Graph(torch.ones(2, 3), torch.tensor([[0], [1]])), Graph(torch.ones(2, 4), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"different numbers of node features \[3, 4\]"):
        collate_graphs([a, b])
    with pytest.raises(ValueError, match="label all of them or none"):
        collate_graphs([Graph(a.x, a.edge_index, y=1), a])
    with pytest.raises(TypeError, match="not a Graph"):
        collate_graphs([(a.x, a.edge_index)])


def test_check_batch_catches_graph_index_mismatch():
    batch = collate_graphs([graph_from_networkx(nx.path_graph(4)), graph_from_networkx(nx.path_graph(3))])
    with pytest.raises(ValueError, match="graph_index has 6 entries but x has 7 rows"):
        check_batch(batch["x"], batch["edge_index"], batch["graph_index"][:-1])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 1\)"):
        check_batch(batch["x"], batch["edge_index"], batch["graph_index"], num_graphs=1)
    gnn = GNN(NODE_FEATURES, 2)
    with pytest.raises(ValueError, match="graph_index has"):
        gnn(batch["x"], batch["edge_index"], batch["graph_index"][:-1], 2)
    with pytest.raises(ValueError, match=f"built for {NODE_FEATURES} node features"):
        gnn(batch["x"][:, :5], batch["edge_index"], batch["graph_index"], 2)


# ------------------------------------------------------------------ message passing
def test_neighbour_sum_equals_dense_and_networkx():
    generator = torch.Generator().manual_seed(0)
    for G in random_nx_graphs():
        n = G.number_of_nodes()
        edge_index = graph_from_networkx(G).edge_index
        h = torch.randn(n, 4, generator=generator)
        assert torch.allclose(neighbour_sum(h, edge_index), dense_adjacency(edge_index, n) @ h, atol=1e-5)
        by_loops = torch.stack([sum((h[j] for j in G.neighbors(i)), torch.zeros(4)) for i in G.nodes])
        assert torch.allclose(neighbour_sum(h, edge_index), by_loops, atol=1e-5)
        assert in_degree(edge_index, n).tolist() == [G.degree[i] for i in G.nodes]
        assert neighbour_sum(torch.ones(n, 1), edge_index).squeeze(1).tolist() == [G.degree[i] for i in G.nodes]


def test_gin_layer_equals_dense_formula_and_gradients_flow():
    torch.manual_seed(0)
    G = nx.gnp_random_graph(20, 0.2, seed=5)
    edge_index = graph_from_networkx(G).edge_index
    layer = GINLayer(6, 5)
    with torch.no_grad(): layer.eps.fill_(-0.3)
    h = torch.randn(20, 6, requires_grad=True)
    out = layer(h, edge_index)   # training mode: BatchNorm uses this batch's statistics, the same in both
    dense = torch.relu(layer.norm(layer.mlp(0.7 * h + dense_adjacency(edge_index, 20) @ h)))
    assert torch.allclose(out, dense, atol=1e-5)
    out.sum().backward()
    assert h.grad is not None and layer.eps.grad is not None and torch.isfinite(h.grad).all()


def test_mean_pool_equals_per_graph_loop():
    torch.manual_seed(1)
    graph_index = torch.tensor([0, 0, 1, 1, 1, 3])
    h = torch.randn(6, 3)
    pooled = graph_mean_pool(h, graph_index, 4)
    for g in range(4):
        rows = h[graph_index == g]
        assert torch.allclose(pooled[g], rows.mean(0) if len(rows) else torch.zeros(3), atol=1e-6)


def test_gnn_is_invariant_to_node_order_and_isomorphism():
    torch.manual_seed(0)
    gnn = GNN(NODE_FEATURES, 3, hidden=16, n_layers=2).eval()
    graphs = [graph_from_networkx(G) for G in random_nx_graphs()[:3]]
    batch = collate_graphs(graphs)
    batch.pop("labels", None)
    logits = gnn(**batch)
    n = len(batch["x"])
    perm = torch.randperm(n)
    new_id = torch.empty_like(perm)
    new_id[perm] = torch.arange(n)
    permuted = gnn(batch["x"][perm], new_id[batch["edge_index"]], batch["graph_index"][perm], batch["num_graphs"])
    assert torch.allclose(logits, permuted, atol=1e-5)
    # the same graph relabelled by networkx gives the same features
    G = nx.barabasi_albert_graph(15, 2, seed=4)
    mapping = dict(zip(G.nodes, np.random.default_rng(0).permutation(15).tolist()))
    H = nx.relabel_nodes(G, mapping)
    H = nx.convert_node_labels_to_integers(H, ordering="sorted")
    features = graph_features(gnn, GraphDataset([graph_from_networkx(G), graph_from_networkx(H)]))
    assert torch.allclose(features[0], features[1], atol=1e-5)


def test_gnn_stages_and_features():
    gnn = GNN(NODE_FEATURES, None, hidden=8, n_layers=3)
    assert gnn.stage_names == ["stem", "layer1", "layer2", "layer3", "head"] and gnn.feature_dim == 8
    dataset = make_graph_dataset(6, seed=0)
    features = graph_features(gnn, dataset)
    assert features.shape == (6, 8)
    assert graph_features(gnn, dataset, upto="layer1").shape == (6, 8)
    with pytest.raises(ValueError, match="Unknown stage 'head'"):
        graph_features(gnn, dataset, upto="head")
    assert torch.allclose(mean_input_features(dataset)[0], dataset[0].x.mean(0))


# ------------------------------------------------------------------ generated graphs
def test_node_attributes_match_networkx():
    G = nx.powerlaw_cluster_graph(30, 3, 0.5, seed=0)
    attributes = node_attributes(G)
    clustering = nx.clustering(G)
    for i, v in enumerate(G.nodes):
        assert attributes[i, 0] == min(G.degree[v], DEGREE_CLASSES - 1)
        c = clustering[v]
        expected = 0 if c == 0 else 1 if c <= 0.25 else 2 if c <= 0.5 else 3
        assert attributes[i, 1] == expected
    assert torch.equal(attributes_from_features(attribute_features(attributes)), attributes)


def test_dataset_is_seeded_balanced_and_structured():
    a, b = make_graph_dataset(24, seed=7), make_graph_dataset(24, seed=7)
    assert all(torch.equal(x.x, y.x) and torch.equal(x.edge_index, y.edge_index) for x, y in zip(a, b))
    assert not torch.equal(make_graph_dataset(24, seed=8)[0].edge_index, a[0].edge_index)
    assert torch.bincount(a.labels).tolist() == [4] * len(GRAPH_FAMILIES) and a.classes == list(GRAPH_FAMILIES)
    for graph in a:
        assert 12 <= graph.num_nodes <= 30
        if a.classes[graph.y] == "tree":   # a tree: N - 1 edges and no triangles
            assert graph.edge_index.shape[1] == 2 * (graph.num_nodes - 1)
            assert (attributes_from_features(graph.x)[:, 1] == 0).all()
    unlabelled = a.unlabelled()
    assert unlabelled.labels is None and unlabelled.classes is None and "labels" not in collate_graphs(unlabelled.graphs[:3])
    assert len(a.subset(torch.tensor([0, 5]))) == 2
    with pytest.raises(ValueError, match="Unknown graph family 'grid'"):
        random_graph("grid", 10, np.random.default_rng(0))


# ------------------------------------------------------------------ attribute masking
def test_mask_attributes_hides_and_records_targets():
    batch = collate_graphs(make_graph_dataset(8, seed=0).graphs)
    masked = mask_attributes(batch, 0.2, generator=torch.Generator().manual_seed(0))
    nodes = masked["masked_nodes"]
    assert len(nodes) == round(0.2 * len(batch["x"])) and len(nodes.unique()) == len(nodes)
    assert (masked["x"][nodes, :-1] == 0).all() and (masked["x"][nodes, -1] == 1).all()
    keep = torch.ones(len(batch["x"]), dtype=torch.bool); keep[nodes] = False
    assert torch.equal(masked["x"][keep], batch["x"][keep])          # other nodes untouched
    assert torch.equal(masked["labels"], attributes_from_features(batch["x"][nodes]))
    assert not torch.equal(batch["x"], masked["x"])                  # the input batch is not modified in place
    with pytest.raises(ValueError, match=r"mask_rate must be in \(0, 1\]"):
        mask_attributes(batch, 0.0)
    with pytest.raises(ValueError, match=r"mask_rate must be in \(0, 1\]"):
        AttributeMaskingCollate(1.5)


def test_attribute_masking_loss_equals_loops():
    torch.manual_seed(0)
    logits = torch.randn(7, DEGREE_CLASSES + CLUSTERING_CLASSES)
    targets = torch.stack([torch.randint(0, DEGREE_CLASSES, (7,)), torch.randint(0, CLUSTERING_CLASSES, (7,))], 1)
    expected = 0.0
    for part, (lo, hi) in enumerate([(0, DEGREE_CLASSES), (DEGREE_CLASSES, DEGREE_CLASSES + CLUSTERING_CLASSES)]):
        for m in range(7):
            z = logits[m, lo:hi].tolist()
            expected += (math.log(sum(math.exp(v) for v in z)) - z[targets[m, part]]) / 7
    assert abs(attribute_masking_loss(logits, targets).item() - expected) < 1e-5
    right = torch.zeros(2, DEGREE_CLASSES + CLUSTERING_CLASSES)
    right[0, 3] = right[0, DEGREE_CLASSES + 1] = right[1, 2] = right[1, DEGREE_CLASSES] = 10.0
    targets = torch.tensor([[3, 1], [5, 0]])
    assert masked_degree_accuracy(right, targets) == 0.5 and masked_clustering_accuracy(right, targets) == 1.0
    with pytest.raises(ValueError, match="expects logits"):
        attribute_masking_loss(logits[:, :5], targets)


def test_attribute_masking_trainer_predicts_masked_nodes_only():
    torch.manual_seed(0)
    gnn = GNN(NODE_FEATURES, hidden=8, n_layers=2)
    masked = AttributeMaskingCollate()(make_graph_dataset(6, seed=1).graphs)
    logits = AttributeMaskingModel(gnn)(**{k: v for k, v in masked.items() if k != "labels"})
    assert logits.shape == (len(masked["masked_nodes"]), DEGREE_CLASSES + CLUSTERING_CLASSES)


def test_pretraining_task_reduces_the_loss():
    from tlcourse.pretrain import PretrainTask, make_task, pretrain
    task = make_task("graph_attribute_masking", seed=0, n_train=120, n_valid=30, epochs=4, batch_size=16, hidden=16)
    assert isinstance(task, PretrainTask) and task.architecture["hidden"] == 16
    assert task.train_set.labels is None and len(task.train_set) == 120
    learner = pretrain(task, seed=0, progress=False)
    model, history = learner.pretrained, learner.history
    assert model is task.model and learner.model is task.trainer and not model.training and model.stage_names[-1] == "head"
    losses = history.to_frame()["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]
    again = attribute_masking_task(seed=0, n_train=120, n_valid=30, epochs=4, batch_size=16, hidden=16)
    assert all(torch.equal(p, q) for p, q in zip(again.model.parameters(), make_task(
        "graph_attribute_masking", seed=0, n_train=120, n_valid=30, hidden=16).model.parameters()))
