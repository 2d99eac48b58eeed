from tests.backbones.test_qwen2_generation import *
def test_dbg(hf_model, tmp_checkpoint):
    model = load_qwen2(tmp_checkpoint(hf_model)).eval()
    seqs = [torch.randint(0, VOCAB, (n,)).tolist() for n in (7, 3, 5)]
    for s in seqs:
        print(s, greedy(model,[s],4), hf_model.generate(torch.tensor([s]), max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)[0,len(s):].tolist())
        with torch.no_grad():
            a=hf_model(torch.tensor([s])).logits[0]
            st=layout_state([[len(s)]]); b=model.logits(model(model.embed(torch.tensor([s])),st).hidden)[0]
        print((a-b).abs().max())
    print(greedy(model,seqs,4))
    assert 0
