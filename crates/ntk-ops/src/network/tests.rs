//! The network passes against the generic (autodiff) path, finite differences and PyTorch.

use super::layers::conv2d::Conv2d;
use super::*;
use crate::activation::Activation;
use crate::convert::{tensor_from_f64, to_vec_f64};
use crate::error::OpsError;
use crate::jacobian::{JacobianOperator, JacobianParams};
use crate::params::ParamLayout;
use crate::testing::{TestBackend, dot, rel_err};
use proptest::prelude::*;

type B = TestBackend;

/// A network with randomized parameters (norm scales away from 1) and
/// running statistics, so that every term of every rule is exercised.
fn random_net(cfg: &NetworkConfig, seed: u64) -> Network<B> {
    let (theta, bufs) = crate::conformance::values(cfg, seed);
    cfg.with_params(&theta, &bufs, &Default::default()).unwrap()
}

fn inputs(cfg: &NetworkConfig, n: usize, seed: u64) -> Tensor<B, 2> {
    let d = cfg.n_inputs();
    tensor_from_f64(
        SplitMix64::new(seed).normal_vec(n * d),
        n,
        d,
        &Default::default(),
    )
}

/// Fast path against the generic (nested autodiff) path: outputs, $JV$
/// and $J^\top U$ with two columns.
fn check_against_generic(cfg: &NetworkConfig, n: usize, seed: u64) {
    let net = random_net(cfg, seed);
    let x = inputs(cfg, n, seed + 1);
    let fast = net.jacobian(x.clone(), Default::default()).unwrap();
    let generic = net.generic_jacobian(x, Default::default()).unwrap();
    let (p, r) = (fast.n_params(), fast.n_rows());
    assert_eq!((generic.n_params(), generic.n_rows()), (p, r));
    let dev = fast.device();
    let mut rng = SplitMix64::new(seed + 2);
    let v = tensor_from_f64(rng.normal_vec(p * 2), p, 2, &dev);
    let u = tensor_from_f64(rng.normal_vec(r * 2), r, 2, &dev);
    let pairs = [
        (
            "outputs",
            fast.outputs().unwrap(),
            generic.outputs().unwrap(),
        ),
        ("jvp", fast.jvp(v.clone()).unwrap(), generic.jvp(v).unwrap()),
        ("vjp", fast.vjp(u.clone()).unwrap(), generic.vjp(u).unwrap()),
    ];
    for (what, a, b) in pairs {
        let e = rel_err(&to_vec_f64(a), &to_vec_f64(b));
        assert!(e < 1e-10, "{what}: {e} for {:?}", cfg.layers);
    }
}

fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize) -> Layer {
    Conv2d::new(ci, co, k)
        .with_stride([s; 2])
        .with_padding([p; 2])
        .into()
}

#[test]
fn linear_and_every_activation_match_generic_path() {
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        let cfg = NetworkConfig::new(
            &[3],
            vec![Layer::linear(3, 5), Layer::act(act), Layer::linear(5, 2)],
        );
        check_against_generic(&cfg, 4, i as u64);
    }
}

#[test]
fn conv_with_stride_and_padding_matches_generic_path() {
    let cfg = NetworkConfig::new(
        &[2, 7, 6],
        vec![
            conv(2, 3, 3, 2, 1),
            Layer::act(Activation::Tanh),
            conv(3, 2, 2, 1, 0),
            Layer::flatten(),
            Layer::linear(2 * 3 * 2, 2),
        ],
    );
    check_against_generic(&cfg, 3, 10);
    let uneven = NetworkConfig::new(
        &[1, 9, 7],
        vec![
            Conv2d::new(1, 2, 3)
                .with_kernel([3, 2])
                .with_stride([3, 2])
                .with_padding([2, 1])
                .into(),
            Layer::act(Activation::Sigmoid),
            Layer::flatten(),
            Layer::linear(2 * 4 * 4, 1),
        ],
    );
    check_against_generic(&uneven, 2, 11);
}

#[test]
fn conv_with_dilation_and_groups_matches_generic_path() {
    // dilation 2 with padding, then a grouped and a depthwise convolution
    let cfg = NetworkConfig::new(
        &[2, 9, 8],
        vec![
            Conv2d::new(2, 4, 3)
                .with_dilation([2, 2])
                .with_padding([1, 2])
                .into(),
            Layer::act(Activation::Tanh),
            Conv2d::new(4, 6, 2)
                .with_groups(2)
                .with_stride([2, 1])
                .into(),
            Layer::act(Activation::Softplus),
            Conv2d::new(6, 6, 3)
                .with_groups(6)
                .with_dilation([1, 2])
                .with_padding([1, 2])
                .into(),
            Layer::flatten(),
            Layer::linear(6 * 3 * 7, 2),
        ],
    );
    assert_eq!(
        cfg.layout().unwrap().get("2.weight").unwrap().shape,
        vec![6, 2, 2, 2]
    );
    check_against_generic(&cfg, 3, 12);
}

#[test]
fn pooling_matches_generic_path() {
    for (i, pool) in [
        Layer::avg_pool2d([2, 2]),
        Layer::max_pool2d([2, 2]),
        Layer::avg_pool2d([3, 2]),
        Layer::max_pool2d([2, 3]),
    ]
    .into_iter()
    .enumerate()
    {
        // odd sizes: trailing rows and columns are dropped
        let cfg = NetworkConfig::new(
            &[1, 9, 8],
            vec![
                conv(1, 3, 2, 1, 0),
                Layer::act(Activation::Gelu),
                pool.clone(),
                Layer::flatten(),
                Layer::linear(3 * (8 / [2, 2, 3, 2][i]) * (7 / [2, 2, 2, 3][i]), 2),
            ],
        );
        check_against_generic(&cfg, 3, 20 + i as u64);
    }
}

#[test]
fn norms_match_generic_path() {
    let bn = NetworkConfig::new(
        &[2, 5, 5],
        vec![
            conv(2, 3, 3, 1, 1),
            Layer::batch_norm2d(3),
            Layer::act(Activation::Relu),
            Layer::flatten(),
            Layer::linear(75, 2),
        ],
    );
    check_against_generic(&bn, 4, 30);
    let ln_image = NetworkConfig::new(
        &[2, 4, 4],
        vec![
            conv(2, 3, 3, 1, 0),
            Layer::layer_norm(1e-5),
            Layer::act(Activation::Tanh),
            Layer::flatten(),
            Layer::linear(12, 2),
        ],
    );
    check_against_generic(&ln_image, 3, 31);
    let ln_vector = NetworkConfig::new(
        &[4],
        vec![
            Layer::linear(4, 6),
            Layer::layer_norm(1e-3),
            Layer::act(Activation::Elu),
            Layer::linear(6, 3),
        ],
    );
    check_against_generic(&ln_vector, 5, 32);
    // a norm as the first layer: only its own parameters are differentiated
    let first = NetworkConfig::new(
        &[3, 2, 2],
        vec![
            Layer::batch_norm2d(3),
            Layer::flatten(),
            Layer::layer_norm(1e-5),
            Layer::linear(12, 1),
        ],
    );
    check_against_generic(&first, 3, 33);
}

/// Conv → BN → ReLU → residual(conv → BN → ReLU → conv) → max-pool →
/// conv → LayerNorm → tanh → avg-pool → flatten → linear.
fn small_resnet() -> NetworkConfig {
    let bn = |c| Layer::batch_norm2d(c);
    NetworkConfig::new(
        &[2, 8, 8],
        vec![
            conv(2, 4, 3, 1, 1),
            bn(4),
            Layer::act(Activation::Relu),
            Layer::residual(vec![
                conv(4, 4, 3, 1, 1),
                bn(4),
                Layer::act(Activation::Relu),
                conv(4, 4, 3, 1, 1),
            ]),
            Layer::max_pool2d([2, 2]),
            conv(4, 3, 3, 1, 1),
            Layer::layer_norm(1e-5),
            Layer::act(Activation::Tanh),
            Layer::avg_pool2d([2, 2]),
            Layer::flatten(),
            Layer::linear(12, 3),
        ],
    )
}

#[test]
fn residual_cnn_matches_generic_path() {
    check_against_generic(&small_resnet(), 3, 40);
    let residual_only = NetworkConfig::new(
        &[5],
        vec![
            Layer::residual(vec![Layer::linear(5, 5), Layer::act(Activation::Softplus)]),
            Layer::linear(5, 1),
        ],
    );
    check_against_generic(&residual_only, 4, 41);
}

#[test]
fn residual_cnn_jvp_matches_central_differences() {
    let cfg = small_resnet();
    let net = random_net(&cfg, 50);
    let x = inputs(&cfg, 4, 51);
    let jac = net.jacobian(x.clone(), Default::default()).unwrap();
    let theta = to_vec_f64(net.flatten());
    let bufs = net.buffers_flat();
    let p = theta.len();
    let v = SplitMix64::new(52).normal_vec(p);
    let jv = to_vec_f64(
        jac.jvp(tensor_from_f64(v.clone(), p, 1, &jac.device()))
            .unwrap(),
    );
    let h = 1e-5;
    let at = |s: f64| {
        let th: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + s * d).collect();
        cfg.with_params::<B>(&th, &bufs, &jac.device())
            .unwrap()
            .forward(x.clone())
    };
    let fd = to_vec_f64((at(h) - at(-h)).div_scalar(2.0 * h));
    // ReLU and max-pool kinks are not crossed almost surely at this step
    assert!(rel_err(&jv, &fd) < 1e-7, "{}", rel_err(&jv, &fd));
}

#[test]
fn chunked_and_uncached_products_agree_with_cached() {
    let cfg = small_resnet();
    let net = random_net(&cfg, 60);
    let x = inputs(&cfg, 7, 61);
    let cached = net.jacobian(x.clone(), Default::default()).unwrap();
    let small = net
        .jacobian(
            x.clone(),
            JacobianParams {
                max_chunk_rows: 3,
                ..Default::default()
            },
        )
        .unwrap();
    let uncached = net
        .jacobian(
            x,
            JacobianParams {
                memory_budget: 5000,
                cache_factors: false,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(cached.is_cached() && small.is_cached() && !uncached.is_cached());
    let dev = cached.device();
    let mut rng = SplitMix64::new(62);
    let (p, r) = (cached.n_params(), cached.n_rows());
    let v = tensor_from_f64(rng.normal_vec(p * 3), p, 3, &dev);
    let u = tensor_from_f64(rng.normal_vec(r * 3), r, 3, &dev);
    let jv = to_vec_f64(cached.jvp(v.clone()).unwrap());
    let jtu = to_vec_f64(cached.vjp(u.clone()).unwrap());
    let out = to_vec_f64(cached.outputs().unwrap());
    for other in [&small, &uncached] {
        assert!(rel_err(&to_vec_f64(other.jvp(v.clone()).unwrap()), &jv) < 1e-13);
        assert!(rel_err(&to_vec_f64(other.vjp(u.clone()).unwrap()), &jtu) < 1e-13);
        assert!(rel_err(&to_vec_f64(other.outputs().unwrap()), &out) < 1e-14);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn adjointness(
        c in 1usize..3, hw in 4usize..8, c1 in 1usize..4, kern in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, pool in 0usize..3, norm in 0usize..3,
        residual in any::<bool>(), o in 1usize..3, n in 1usize..5, k in 1usize..4,
        seed in 0u64..1000, small_budget in any::<bool>(),
    ) {
        let mut layers = vec![conv(c, c1, kern, stride, pad), Layer::act(Activation::Tanh)];
        match norm {
            1 => layers.push(Layer::batch_norm2d(c1)),
            2 => layers.push(Layer::layer_norm(1e-5)),
            _ => {}
        }
        if residual {
            layers.push(Layer::residual(vec![
                conv(c1, c1, 3, 1, 1),
                Layer::act(Activation::Softplus),
            ]));
        }
        prop_assume!(pad < kern);
        let side = (hw + 2 * pad - kern) / stride + 1;
        prop_assume!(crate::conformance::pooled_head(&mut layers, pool, side, c1, o));
        let cfg = NetworkConfig::new(&[c, hw, hw], layers);
        let net = random_net(&cfg, seed);
        let opts = JacobianParams {
            memory_budget: if small_budget { 4000 } else { 1 << 24 },
            cache_factors: !small_budget,
            max_chunk_rows: if small_budget { 2 } else { usize::MAX },
            ..Default::default()
        };
        let jac = net.jacobian(inputs(&cfg, n, seed + 3), opts).unwrap();
        let dev = jac.device();
        let mut rng = SplitMix64::new(seed + 7);
        let (p, r) = (jac.n_params(), jac.n_rows());
        let v = tensor_from_f64(rng.normal_vec(p * k), p, k, &dev);
        let u = tensor_from_f64(rng.normal_vec(r * k), r, k, &dev);
        let jv = jac.jvp(v.clone()).unwrap();
        let jtu = jac.vjp(u.clone()).unwrap();
        prop_assert_eq!(jv.dims(), [n * o, k]);
        prop_assert_eq!(jtu.dims(), [p, k]);
        let (lhs, rhs) = (dot(&jv, &u), dot(&v, &jtu));
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
    }
}

#[test]
fn layout_follows_named_parameters_order() {
    let l = small_resnet().layout().unwrap();
    let names: Vec<_> = l.specs().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "3.body.0.weight",
            "3.body.0.bias",
            "3.body.1.weight",
            "3.body.1.bias",
            "3.body.3.weight",
            "3.body.3.bias",
            "5.weight",
            "5.bias",
            "6.weight",
            "6.bias",
            "10.weight",
            "10.bias",
        ]
    );
    assert_eq!(l.get("6.weight").unwrap().shape, vec![3, 4, 4]);
    assert_eq!(l.get("6.bias").unwrap().shape, vec![3, 4, 4]);
    assert_eq!(l.get("10.weight").unwrap().shape, vec![3, 12]);
    let b = small_resnet().buffer_layout().unwrap();
    let names: Vec<_> = b.specs().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "1.running_mean",
            "1.running_var",
            "3.body.1.running_mean",
            "3.body.1.running_var"
        ]
    );
}

/// The PyTorch fixture (`testdata/make_sequential_fixture.py`): parameter
/// and buffer order, shapes, and the forward pass of the same network.
#[test]
fn pytorch_fixture_order_and_forward() {
    let bytes = include_bytes!("../../testdata/sequential_resnet.safetensors");
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let cfg = small_resnet();
    let layout = cfg.layout().unwrap();
    let buffer_layout = cfg.buffer_layout().unwrap();
    let names = |l: &ParamLayout| {
        l.specs()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names(&layout), meta["named_parameters"]);
    assert_eq!(names(&buffer_layout), meta["buffers"]);
    // parameters and buffers in state_dict order; num_batches_tracked is not used
    let state_dict: Vec<_> = meta["state_dict"]
        .split(',')
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    let mut ours: Vec<_> = layout
        .specs()
        .iter()
        .chain(buffer_layout.specs())
        .map(|s| s.name.as_str())
        .collect();
    let pos = |k: &str| state_dict.iter().position(|s| *s == k).unwrap();
    ours.sort_by_key(|k| pos(k));
    assert_eq!(ours, state_dict);
    // shapes are checked by the reader
    let theta = crate::checkpoint::params_from_bytes(&layout, bytes, "").unwrap();
    let bufs = crate::checkpoint::params_from_bytes(&buffer_layout, bytes, "").unwrap();
    let io = ParamLayout::new([
        ("x".to_string(), vec![3, 128]),
        ("y".to_string(), vec![3, 3]),
    ]);
    let xy = crate::checkpoint::params_from_bytes(&io, bytes, "").unwrap();
    let dev = Default::default();
    let net = cfg.with_params::<B>(&theta, &bufs, &dev).unwrap();
    let x = tensor_from_f64(xy[..384].to_vec(), 3, 128, &dev);
    let want = &xy[384..];
    let jac = net.jacobian(x.clone(), Default::default()).unwrap();
    for got in [net.forward(x), jac.outputs().unwrap()] {
        let e = rel_err(&to_vec_f64(got), want);
        assert!(e < 1e-12, "{e}");
    }
}

#[test]
fn f32_backend_computes_in_f32() {
    type B32 = burn_ndarray::NdArray<f32>;
    let cfg = small_resnet();
    let dev = Default::default();
    let net = cfg.init::<B32>(3, &dev).unwrap();
    let x = tensor_from_f64(SplitMix64::new(4).normal_vec(2 * 128), 2, 128, &dev);
    let jac = net.jacobian(x, Default::default()).unwrap();
    let (p, r) = (jac.n_params(), jac.n_rows());
    let mut rng = SplitMix64::new(5);
    let v = tensor_from_f64(rng.normal_vec(p), p, 1, &dev);
    let u = tensor_from_f64(rng.normal_vec(r), r, 1, &dev);
    let jv = jac.jvp(v.clone()).unwrap();
    let jtu = jac.vjp(u.clone()).unwrap();
    assert_eq!(jv.dtype(), burn::tensor::DType::F32);
    assert_eq!(jtu.dtype(), burn::tensor::DType::F32);
    let lhs: f64 = to_vec_f64(jv * u).iter().sum();
    let rhs: f64 = to_vec_f64(v * jtu).iter().sum();
    assert!(
        (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
        "{lhs} vs {rhs}"
    );
}

#[test]
fn typed_errors_for_bad_configs_and_inputs() {
    let bad = [
        NetworkConfig::new(&[1, 4, 4], vec![Layer::linear(16, 1)]),
        NetworkConfig::new(&[4], vec![Layer::conv2d(1, 1, 1)]),
        NetworkConfig::new(&[1, 4, 4], vec![Layer::conv2d(2, 1, 1)]),
        NetworkConfig::new(&[1, 4, 4], vec![Layer::conv2d(1, 1, 5)]),
        NetworkConfig::new(&[1, 4, 4], vec![conv(1, 1, 2, 1, 2)]),
        NetworkConfig::new(&[1, 2, 2], vec![Layer::max_pool2d([3, 3])]),
        NetworkConfig::new(&[3, 4, 4], vec![Conv2d::new(3, 2, 1).with_groups(2).into()]),
        NetworkConfig::new(
            &[2, 4, 4],
            vec![Conv2d::new(2, 2, 3).with_dilation([0, 1]).into()],
        ),
        NetworkConfig::new(
            &[1, 2, 2],
            vec![Conv2d::new(1, 1, 2).with_dilation([2, 2]).into()],
        ),
        NetworkConfig::new(
            &[1, 9, 9],
            vec![
                Conv2d::new(1, 1, 2)
                    .with_dilation([2, 2])
                    .with_padding([3, 0])
                    .into(),
            ],
        ),
        NetworkConfig::new(&[2, 3], vec![Layer::linear(6, 1)]),
        NetworkConfig::new(&[3], vec![Layer::act(Activation::Tanh)]),
        NetworkConfig::new(
            &[3],
            vec![
                Layer::residual(vec![Layer::linear(3, 2)]),
                Layer::linear(2, 1),
            ],
        ),
    ];
    for cfg in bad {
        assert!(
            matches!(cfg.layout(), Err(OpsError::InvalidConfig(_))),
            "{cfg:?}"
        );
    }
    let cfg = NetworkConfig::new(&[1, 4, 4], vec![Layer::flatten(), Layer::linear(16, 1)]);
    let dev = Default::default();
    assert!(matches!(
        cfg.with_params::<B>(&[0.0; 3], &[], &dev),
        Err(OpsError::ShapeMismatch { .. })
    ));
    let net = cfg.init::<B>(0, &dev).unwrap();
    assert!(matches!(
        net.jacobian(
            tensor_from_f64(vec![0.0; 15], 1, 15, &dev),
            Default::default()
        ),
        Err(OpsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        net.generic_jacobian(
            tensor_from_f64(vec![0.0; 15], 1, 15, &dev),
            Default::default()
        ),
        Err(OpsError::ShapeMismatch { .. })
    ));
    let mut vals = vec![0.0; 32];
    vals[20] = f64::NAN;
    assert!(matches!(
        net.jacobian(tensor_from_f64(vals, 2, 16, &dev), Default::default()),
        Err(OpsError::NonFinite {
            index: Some(20),
            ..
        })
    ));
    assert!(matches!(
        net.jacobian(crate::convert::zeros([0, 16], &dev), Default::default()),
        Err(OpsError::Empty { .. })
    ));
    let jac = net
        .jacobian(
            tensor_from_f64(vec![0.5; 32], 2, 16, &dev),
            Default::default(),
        )
        .unwrap();
    assert!(matches!(
        jac.jvp(tensor_from_f64(vec![0.0; 16], 16, 1, &dev)),
        Err(OpsError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        jac.vjp(tensor_from_f64(vec![0.0; 3], 3, 1, &dev)),
        Err(OpsError::ShapeMismatch { .. })
    ));
}
